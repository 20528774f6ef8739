"""Times and durations of timed pauses: ``until`` as an RFC 3339 time or an ISO 8601 duration,
and the friendly durations of the command line (``2h``, ``90m``, ``1d12h``) as ISO 8601.

Strict on purpose: a duration is ``P[nW]`` or ``P[nD][T[nH][nM][n[.f]S]]`` (weeks, days, hours,
minutes, seconds: units of a fixed length; years and months are not, so they are refused), a
time has a date, a time of day and an offset (``Z`` or ``+hh:mm``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

__all__ = [
    "Until",
    "friendly_duration",
    "iso_duration",
    "parse_duration",
    "parse_time",
    "parse_until",
    "until_text",
]

_DURATION: Final = re.compile(
    r"P(?:(?P<weeks>\d{1,6})W"
    r"|(?=\d|T\d)(?:(?P<days>\d{1,6})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,7})H)?(?:(?P<minutes>\d{1,9})M)?"
    r"(?:(?P<seconds>\d{1,10}(?:[.,]\d{1,6})?)S)?)?)"
)
_TIME: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_FRIENDLY: Final = re.compile(r"(?:(\d+)\s*(w|d|h|m|s)\s*)+", re.IGNORECASE)
_FRIENDLY_PART: Final = re.compile(r"(\d+)\s*(w|d|h|m|s)", re.IGNORECASE)


def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration of fixed-length units (``PT2H``, ``P1D``, ``P1DT30M``, ``P2W``,
    ``PT1.5S``), or None if ``text`` is not one. At least one unit; the ``T`` needs a time
    unit after it."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    if not any(parts.values()) or text.endswith("T"):
        return None
    seconds = float((parts["seconds"] or "0").replace(",", "."))
    try:
        return timedelta(
            weeks=int(parts["weeks"] or 0),
            days=int(parts["days"] or 0),
            hours=int(parts["hours"] or 0),
            minutes=int(parts["minutes"] or 0),
            seconds=seconds,
        )
    except OverflowError:
        return None


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time with its offset, or None if ``text`` is not one (or not a real date)."""
    if _TIME.fullmatch(text) is None:
        return None
    normalized = text.replace("z", "Z").replace("t", "T")
    # Python keeps microseconds: a longer fraction is cut to six digits.
    normalized = re.sub(r"(\.\d{6})\d+", r"\1", normalized)
    try:
        return datetime.fromisoformat(normalized)
    except ValueError:
        return None


def parse_until(text: str) -> datetime | timedelta | None:
    """``until`` as given: an absolute time, a duration (counted from the decision's time), or
    None when it is neither."""
    return parse_time(text) if text[:1].isdigit() else parse_duration(text)


def friendly_duration(text: str) -> str:
    """``2h`` -> ``PT2H``, ``1d12h`` -> ``P1DT12H``, ``90m`` -> ``PT90M``, ``2w`` -> ``P2W``;
    an ISO 8601 duration or an RFC 3339 time is returned as it is. ``ValueError`` otherwise."""
    stripped = text.strip()
    if parse_until(stripped) is not None:
        return stripped
    if not stripped or _FRIENDLY.fullmatch(stripped) is None:
        raise ValueError(
            f"{text!r} is not a duration (2h, 90m, 1d12h, 2w, PT2H) nor an RFC 3339 time"
        )
    units: dict[str, int] = {}
    for amount, unit in _FRIENDLY_PART.findall(stripped):
        key = unit.lower()
        units[key] = units.get(key, 0) + int(amount)
    if set(units) == {"w"}:
        return f"P{units['w']}W"
    days = units.get("d", 0) + 7 * units.get("w", 0)
    clock = "".join(f"{units[u]}{u.upper()}" for u in ("h", "m", "s") if units.get(u))
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


def iso_duration(delta: timedelta) -> str:
    """``timedelta(hours=2)`` -> ``PT2H`` (days, hours, minutes, seconds; positive only)."""
    if delta <= timedelta(0):
        raise ValueError("a pause's duration must be positive")
    days, rest = delta.days, delta.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    second_text = f"{seconds}.{delta.microseconds:06d}".rstrip("0").rstrip(".")
    if not delta.microseconds:
        second_text = str(seconds) if seconds else ""
    clock = (
        (f"{hours}H" if hours else "")
        + (f"{minutes}M" if minutes else "")
        + (f"{second_text}S" if second_text else "")
    )
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


def until_text(until: str | datetime | timedelta) -> str:
    """``until`` as a command carries it: a duration as ISO 8601, a time (with its offset) as
    RFC 3339, a text as it is (a friendly duration such as ``2h`` converted)."""
    if isinstance(until, timedelta):
        return iso_duration(until)
    if isinstance(until, datetime):
        if until.tzinfo is None:
            raise ValueError("until must be a time with its offset (timezone-aware)")
        return until.isoformat()
    return friendly_duration(until)


def _until_syntax(value: str) -> str:
    if parse_until(value) is None:
        raise PydanticCustomError(
            "until_format",
            "until must be an RFC 3339 time with an offset (2030-01-01T00:00:00Z) or an "
            "ISO 8601 duration (PT2H, P1D, P1DT12H, P2W)",
        )
    return value


#: ``until`` as a command's data gives it: an RFC 3339 time with its offset, or an ISO 8601
#: duration; whether it is in the future and near enough is checked when decided.
Until = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, strip_whitespace=True),
    AfterValidator(_until_syntax),
]
