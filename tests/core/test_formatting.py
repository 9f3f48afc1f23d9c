"""core/formatting.py: durations, dates and relative times as every page writes them (exact texts)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.test import override_settings

from core.formatting import format_at, format_duration, format_exact, format_relative, relative_time

NOW = datetime(2026, 11, 29, 17, 34, 1, 449388, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        ("", "—"),
        ("not a number", "—"),
        (0, "0 s"),
        (timedelta(0), "0 s"),
        (timedelta(microseconds=449388), "0.4 s"),  # was 0:00:00.449388
        (0.04, "0 s"),
        (0.06, "0.1 s"),
        (9.96, "10 s"),
        (12, "12 s"),
        (59.9, "59.9 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min"),  # rounds to 60.0 s: already a minute
        (60, "1 min"),
        (61, "1 min 1 s"),
        (timedelta(minutes=2, seconds=5), "2 min 5 s"),
        (3599, "59 min 59 s"),
        (3600, "1 h"),
        (3600 + 125, "1 h 2 min"),
        (timedelta(hours=23, minutes=59, seconds=59), "23 h 59 min"),
        (86400, "1 d"),
        (timedelta(days=2, hours=3, minutes=30), "2 d 3 h"),
        (-5, "0 s"),
    ],
)
def test_format_duration(value, text):
    assert format_duration(value) == text


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=60), "1 min ago"),
        (timedelta(minutes=59, seconds=59), "59 min ago"),
        (timedelta(hours=1), "1 h ago"),
        (timedelta(hours=23, minutes=59), "23 h ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=29, hours=23), "29 days ago"),
        (timedelta(days=30), "2026-10-30 17:34"),
        (-timedelta(minutes=4, seconds=30), "in 4 min"),
    ],
)
def test_format_relative(ago, text):
    assert format_relative(NOW - ago, now=NOW) == text


def test_absolute_formats_use_the_console_time_zone():
    assert format_at(None) == "—"
    assert format_at(NOW) == "2026-11-29 17:34"
    assert format_exact(NOW) == "2026-11-29 17:34:01 UTC"
    with override_settings(TIME_ZONE="Europe/Berlin"):
        assert format_at(NOW) == "2026-11-29 18:34"
        assert format_exact(NOW) == "2026-11-29 18:34:01 CET"


def test_relative_time_is_a_time_element_with_the_exact_time_on_hover():
    assert relative_time(NOW - timedelta(minutes=5), now=NOW) == (
        '<time datetime="2026-11-29T17:29:01.449388+00:00" title="2026-11-29 17:29:01 UTC">5 min ago</time>')
    assert relative_time(None) == "—"


def test_filters_are_builtins_of_every_template():
    template = Template("{{ d|duration }} | {{ t|at }} | {{ iso|at }} | {{ missing|ago }}")
    text = template.render(Context({"d": timedelta(seconds=125), "t": NOW, "iso": "2026-11-29T17:34:01+00:00"}))
    assert text == ('2 min 5 s | <time datetime="2026-11-29T17:34:01.449388+00:00" title="2026-11-29 17:34:01 UTC">'
                    '2026-11-29 17:34</time> | <time datetime="2026-11-29T17:34:01+00:00" '
                    'title="2026-11-29 17:34:01 UTC">2026-11-29 17:34</time> | —')
