"""The one registry of quote sources: name, factory, description, notebook parameters and defaults.

Adding a source is one :class:`SourceSpec` entry in :data:`SOURCES` (plus its module):
:func:`open_source`, :func:`open_from_parameters` (what notebook 03 calls) and :func:`describe`
(the table notebook 03 shows) all read it.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote
from helpers.notebook.sources._datasets import DATASETS
from helpers.notebook.sources._pace import pace
from helpers.notebook.sources._replay import replay
from helpers.notebook.sources._synthetic import synthetic
from helpers.notebook.sources._tape import count_tape, resolve_tape
from helpers.notebook.sources._yahoo import yfinance_live

__all__ = ["SOURCES", "OpenedSource", "SourceSpec", "describe", "open_from_parameters", "open_source"]


@dataclass(frozen=True)
class SourceSpec:
    """One quote source.

    ``parameters`` maps notebook parameter names (lower case: ``dataset``, ``symbols``) to the
    factory's keyword arguments; ``defaults`` gives an argument's value when the notebook leaves the
    parameter ``None``; ``total(arguments)`` is the number of quotes the source gives, when known.
    """

    name: str
    factory: Callable[..., Iterator[Quote]]
    description: str
    parameters: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    total: Callable[[Mapping[str, Any]], int | None] = lambda arguments: None

    def arguments(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The factory's keyword arguments from notebook parameter values (``None``: the default)."""
        out: dict[str, Any] = {}
        for parameter, argument in self.parameters.items():
            value = values.get(parameter)
            if value is None:
                value = self.defaults.get(argument)
            if value is not None:
                out[argument] = value
        return out


def _replay_total(arguments: Mapping[str, Any]) -> int | None:
    if arguments.get("symbols") is not None:
        return None
    if arguments.get("tape") is not None:
        return count_tape(resolve_tape(arguments["tape"]))
    dataset = DATASETS.get(str(arguments.get("dataset", "aapl-1m")))
    return dataset.records if dataset is not None else None


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            "replay",
            replay,
            "real recorded prices shipped in pinned packages (aapl-1m: 1-minute AAPL; daily: 5 tickers), "
            "or a tape a live run recorded (TAPE)",
            {"dataset": "dataset", "symbols": "symbols", "tape": "tape"},
            total=_replay_total,
        ),
        SourceSpec(
            "synthetic",
            synthetic,
            "seeded geometric random walk, for scale (SYN0001...)",
            {"symbols": "symbols", "count": "count"},
            defaults={"symbols": 5, "count": 1000},
            total=lambda arguments: int(arguments["count"]),
        ),
        SourceSpec(
            "yfinance",
            yfinance_live,
            "live 1-minute bars polled from Yahoo Finance in market hours (needs internet); "
            "records what it sends to a tape",
            {
                "symbols": "symbols",
                "tape": "tape",
                "calendar": "calendar",
                "poll_seconds": "interval_seconds",
            },
            defaults={"symbols": ["AAPL"], "tape": True, "calendar": "XNYS", "interval_seconds": 30.0},
        ),
    )
}
"""Every quote source by name; ``list(SOURCES)`` are the names a notebook's ``SOURCE`` may take."""


def _spec(name: str) -> SourceSpec:
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; use one of {list(SOURCES)}")
    return SOURCES[name]


def open_source(name: str, *, speed: float | None = None, **kwargs: Any) -> Iterator[Quote]:
    """Open a source by name (a key of :data:`SOURCES`) with the factory's own keyword arguments.

    ``speed`` paces it with :func:`~helpers.notebook.sources.pace`. Arguments are checked here,
    before any quote is read.
    """
    spec = _spec(name)
    try:
        inspect.signature(spec.factory).bind(**kwargs)
    except TypeError as err:
        raise SourceError(
            f"source {name!r}: {err}; see help(helpers.notebook.sources.{spec.factory.__name__})"
        ) from err
    quotes = spec.factory(**kwargs)
    return quotes if speed is None else pace(quotes, speed)


@dataclass(frozen=True)
class OpenedSource:
    """What :func:`open_from_parameters` opened: the quotes, their number if known, the arguments."""

    name: str
    arguments: dict[str, Any]
    quotes: Iterator[Quote]
    total: int | None
    source: Any = None  # what the factory returned (a live source reports its state)

    def status(self) -> list[dict[str, Any]]:
        """Per-symbol state of a live source (last bar, last error, next try); [] for the others."""
        status = getattr(self.source, "status", None)
        return list(status()) if callable(status) else []

    def summary(self) -> dict[str, Any]:
        """A live source's polls, requests, market state and tape; {} for the others."""
        summary = getattr(self.source, "summary", None)
        return dict(summary) if isinstance(summary, Mapping) else {}


def open_from_parameters(
    name: str,
    *,
    speed: float | None = None,
    count: int | None = None,
    options: Mapping[str, Any] | None = None,
    **parameters: Any,
) -> OpenedSource:
    """Open a source from notebook parameters: the registry maps them to the source's arguments.

    Parameters the source does not take are ignored (``dataset`` for ``synthetic``); ``None`` means
    the registry's default. ``count`` caps the number of quotes read (``None``: no cap).
    ``options`` go to the source's factory as they are (e.g. ``session`` for yfinance).
    """
    spec = _spec(name)
    arguments = spec.arguments({**parameters, "count": count})
    source = open_source(name, **arguments, **(options or {}))
    quotes = source if speed is None else pace(source, speed)
    if count is not None:
        quotes = itertools.islice(quotes, count)
    total = count if count is not None else spec.total(arguments)
    return OpenedSource(name, arguments, quotes, total, source)


def describe() -> list[dict[str, Any]]:
    """One row per source: name, description, notebook parameters and defaults (for a table)."""
    return [
        {
            "source": spec.name,
            "description": spec.description,
            "parameters": ", ".join(p.upper() for p in spec.parameters),
            "defaults": ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()) or "-",
        }
        for spec in SOURCES.values()
    ]
