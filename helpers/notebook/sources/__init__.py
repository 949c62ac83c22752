"""Quote sources for the producer notebook: real recorded replay, seeded synthetic, live yfinance.

Every source returns a lazy iterator of :class:`~helpers.core.quotes.Quote`; arguments are
checked when the source is opened, data is read as it is consumed. Nothing heavy is
imported at module import (yfinance/pandas only when a live source is read, exchange_calendars
when it is opened).

The live source (:func:`yfinance_live`, :mod:`._yahoo`) keeps to the exchange's hours
(:mod:`._calendar`), backs off on rate limits and records what it sends to a tape
(:mod:`._tape`) that ``replay(tape=...)`` plays back. :mod:`._recorded_yahoo` answers
yfinance's requests offline from the recorded AAPL minute bars (tests, demos).

The sources are declared once, in :data:`SOURCES` (:mod:`._registry`): :func:`open_source`
opens one by name with its own arguments, :func:`open_from_parameters` from notebook
parameters (notebook 03), :func:`describe` lists them. Replay datasets and their pinned file
hashes are in :mod:`._datasets` (:data:`DATASETS`, :data:`DATASET_FILES`).
"""

from __future__ import annotations

from helpers.notebook.sources._datasets import (
    DATASET_FILES,
    DATASETS,
    Dataset,
    DatasetFile,
    verify_datasets,
)
from helpers.notebook.sources._pace import MAX_PACE_SLEEP_SECONDS, pace
from helpers.notebook.sources._registry import (
    SOURCES,
    OpenedSource,
    SourceSpec,
    describe,
    open_from_parameters,
    open_source,
)
from helpers.notebook.sources._replay import replay
from helpers.notebook.sources._synthetic import synthetic
from helpers.notebook.sources._tape import read_tape, resolve_tape, tapes_dir
from helpers.notebook.sources._yahoo import LivePoller, yfinance_live

__all__ = [
    "DATASETS",
    "DATASET_FILES",
    "MAX_PACE_SLEEP_SECONDS",
    "SOURCES",
    "Dataset",
    "DatasetFile",
    "LivePoller",
    "OpenedSource",
    "SourceSpec",
    "describe",
    "open_from_parameters",
    "open_source",
    "pace",
    "read_tape",
    "replay",
    "resolve_tape",
    "synthetic",
    "tapes_dir",
    "verify_datasets",
    "yfinance_live",
]
