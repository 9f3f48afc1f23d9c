"""How every page writes durations, dates and times: one format, in one place.

- Durations read like a person says them: "0.4 s", "59.9 s", "2 min 5 s", "1 h 2 min", "3 d 4 h";
  never microseconds (`0:00:00.449388`).
- Instants: exactly as "2026-11-29 17:34" (local time of the console, TIME_ZONE), or relative
  ("5 min ago", "in 3 min") with the exact time in the `<time>` element's title for hovering.

Pure functions plus the HTML of `<time>`; the template filters in core/templatetags/format_tags.py
call them (a builtin of every template: `{{ job.duration|duration }}`, `{{ job.created_at|ago }}`,
`{{ rule.updated_at|at }}`).
"""

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString

NONE = "—"
DATE_TIME_FORMAT = "%Y-%m-%d %H:%M"
EXACT_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
MINUTE, HOUR, DAY = 60, 3600, 86400


def _seconds(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _two_units(whole: int, big: int, big_name: str, small: int, small_name: str) -> str:
    first, rest = divmod(whole, big)
    second = rest // small
    return f"{first} {big_name} {second} {small_name}" if second else f"{first} {big_name}"


def format_duration(value) -> str:
    """A timedelta or a number of seconds as "0 s", "0.4 s", "59.9 s", "1 min", "2 min 5 s",
    "1 h", "1 h 2 min", "2 d 3 h"; "—" for None (or anything that is not a duration).

    Under a minute with one decimal (trailing ".0" dropped); from a minute on, the two largest
    units, whole (a number that rounds up to 60.0 s is already "1 min"). Negative values count as 0.
    """
    seconds = _seconds(value)
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    tenths = round(seconds * 10)
    if tenths < 600:
        return f"{tenths / 10:g} s"
    whole = round(seconds)
    if whole < HOUR:
        return _two_units(whole, MINUTE, "min", 1, "s")
    if whole < DAY:
        return _two_units(whole, HOUR, "h", MINUTE, "min")
    return _two_units(whole, DAY, "d", HOUR, "h")


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def as_datetime(value) -> datetime | None:
    """A datetime, or an ISO 8601 string of one (as job log lines store it); None otherwise."""
    if isinstance(value, datetime):
        return value
    return parse_datetime(value) if isinstance(value, str) and value else None


def format_at(value: datetime | None) -> str:
    """An instant in the console's time zone as "2026-11-29 17:34"; "—" for None."""
    return NONE if value is None else _local(value).strftime(DATE_TIME_FORMAT)


def format_exact(value: datetime) -> str:
    """The instant to the second with its zone: "2026-11-29 17:34:01 UTC"."""
    return _local(value).strftime(EXACT_FORMAT).strip()


def _count(number: int, unit: str, plural: str | None = None) -> str:
    return f"{number} {unit if number == 1 else (plural or unit + 's')}"


def format_relative(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago (or ahead) an instant is: "just now", "5 min ago", "2 h ago", "1 day ago",
    "3 days ago", "in 4 min"; from 30 days on, the date and time as format_at writes them."""
    if value is None:
        return NONE
    now = now or timezone.now()
    delta = (now - value).total_seconds()
    ahead = delta < 0
    seconds = abs(delta)
    if seconds < MINUTE:
        return "just now"
    if seconds < HOUR:
        span = f"{int(seconds // MINUTE)} min"
    elif seconds < DAY:
        span = f"{int(seconds // HOUR)} h"
    elif seconds < 30 * DAY:
        span = _count(int(seconds // DAY), "day")
    else:
        return format_at(value)
    return f"in {span}" if ahead else f"{span} ago"


def time_element(value: datetime | None, text: str) -> SafeString | str:
    """`<time datetime="ISO" title="exact">text</time>`; "—" for None."""
    if value is None:
        return NONE
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), format_exact(value), text)


def relative_time(value, now: datetime | None = None) -> SafeString | str:
    """A relative time ("5 min ago") whose exact time shows on hover (a datetime or an ISO string)."""
    value = as_datetime(value)
    return time_element(value, format_relative(value, now))


def absolute_time(value) -> SafeString | str:
    """A date and time ("2026-11-29 17:34") whose exact time, to the second, shows on hover."""
    value = as_datetime(value)
    return time_element(value, format_at(value))
