"""Market hours for the live source, from the exchange calendars of ``exchange_calendars``.

``exchange_calendars`` (the library ``pandas_market_calendars`` itself builds its exchange
calendars on) knows each exchange's sessions minute by minute: holidays, early closes
(XNYS closes at 13:00 New York time on the day after Thanksgiving) and daylight saving, so
the poller never asks Yahoo for bars while no bar can be made. It is imported only when a
calendar is opened (it imports pandas).

A poll shortly after the close still runs (:data:`CLOSE_GRACE_SECONDS`): the last minute's
bar is complete only once the session is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from helpers.core.errors import SourceError

__all__ = ["ALWAYS_OPEN", "CLOSE_GRACE_SECONDS", "DEFAULT_CALENDAR", "MarketHours", "market_hours"]

DEFAULT_CALENDAR = "XNYS"  # New York Stock Exchange (also the hours of Nasdaq-listed shares)
CLOSE_GRACE_SECONDS = 120.0  # polls this long after a close still collect the session's last bars
ALWAYS_OPEN = "always"  # the calendar name that polls at any hour


class MarketHours(Protocol):
    """When a poll can find new bars."""

    @property
    def name(self) -> str:
        """The calendar's name (a MIC, or ``"always"``)."""
        ...

    def is_open(self, now: datetime) -> bool:
        """True when ``now`` (aware) is in a session or within the grace after its close."""
        ...

    def next_open(self, now: datetime) -> datetime:
        """The next session open after ``now``, in UTC."""
        ...


@dataclass(frozen=True)
class _Always:
    name: str = ALWAYS_OPEN

    def is_open(self, now: datetime) -> bool:
        return True

    def next_open(self, now: datetime) -> datetime:
        return now.astimezone(UTC)


@dataclass(frozen=True)
class _Exchange:
    name: str
    calendar: Any  # exchange_calendars.ExchangeCalendar

    def is_open(self, now: datetime) -> bool:
        import pandas as pd

        minute = pd.Timestamp(now).tz_convert(UTC).floor("min")
        if self.calendar.is_open_on_minute(minute):
            return True
        # previous_close is strictly before its argument: ask from the next minute so a close
        # at this very minute counts.
        last_close = self.calendar.previous_close(minute + pd.Timedelta(minutes=1)).to_pydatetime()
        return bool(now - last_close <= timedelta(seconds=CLOSE_GRACE_SECONDS))

    def next_open(self, now: datetime) -> datetime:
        import pandas as pd

        minute = pd.Timestamp(now).tz_convert(UTC).floor("min")
        opened: datetime = self.calendar.next_open(minute).to_pydatetime()
        return opened.astimezone(UTC)


ALWAYS: MarketHours = _Always()


def market_hours(name: str | None) -> MarketHours:
    """The hours of an exchange calendar by ISO 10383 MIC (``XNYS``); ``None`` or ``"always"``: any hour."""
    if name is None or name == ALWAYS_OPEN:
        return ALWAYS
    try:
        import exchange_calendars
    except ImportError as err:  # pragma: no cover - a locked dependency
        raise SourceError(
            "market hours need the package exchange_calendars; install the locked dependencies "
            f"(make install), or pass calendar={ALWAYS_OPEN!r} to poll at any hour"
        ) from err
    try:
        calendar = exchange_calendars.get_calendar(name)
    except exchange_calendars.errors.InvalidCalendarName as err:
        raise SourceError(
            f"calendar={name!r} is not an exchange calendar; use a MIC such as {DEFAULT_CALENDAR!r} "
            f"(exchange_calendars.get_calendar_names()) or {ALWAYS_OPEN!r} to poll at any hour"
        ) from err
    return _Exchange(name, calendar)
