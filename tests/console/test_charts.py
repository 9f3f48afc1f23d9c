"""Dashboard charts: server-rendered SVG whose marks sit where their values say, with a title, a
description, a table of the same figures and an empty state; the figures are aggregated in the
database (counts, sums and percentiles per day or hour)."""

import re
import sqlite3
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from console import dashboard
from console.charts import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, Chart, Series
from core.aggregates import _SqlitePercentile, percentile_cont
from core.roles import Role
from pipeline.choices import JobStatus, PushOutcome, PushReason
from pipeline.models import ConversionJob, PushEvent
from registries.models import Instance

SVG = "{http://www.w3.org/2000/svg}"
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
NOW = datetime(2026, 11, 29, 17, 30, tzinfo=UTC)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))  # noqa: S314 - SVG the console drew itself


def marks(svg: str) -> list[dict]:
    """Every mark of a chart's SVG: its attributes and tooltip."""
    root = parse(svg)
    return [{**mark.attrib, "tooltip": mark.find(f"{SVG}title").text}
            for mark in root.iter() if "mark" in mark.attrib.get("class", "").split()]


def test_bars_stand_as_high_as_their_values_on_a_round_axis():
    chart = Chart("c", "Pushes", "Bars per day", ["Nov 1", "Nov 2", "Nov 3"],
                  [Series("Pushes", [8, 0, 3]), Series("Converted", [2, 1, 0])])
    assert chart.top == 10  # 8 rounded up to 1, 2, 2.5 or 5 times a power of ten
    drawn = marks(chart.svg)
    assert [(m["data-series"], m["data-category"], m["data-value"]) for m in drawn] == [
        ("Pushes", "Nov 1", "8"), ("Pushes", "Nov 3", "3"), ("Converted", "Nov 1", "2"), ("Converted", "Nov 2", "1")]
    for mark in drawn:  # height over the plot height is the value over the axis maximum
        assert float(mark["height"]) == pytest.approx(PLOT_HEIGHT * int(mark["data-value"]) / 10, abs=0.01)
        assert float(mark["y"]) + float(mark["height"]) == pytest.approx(HEIGHT - BOTTOM)
    slot = (WIDTH - LEFT - RIGHT) / 3
    assert float(drawn[1]["x"]) == pytest.approx(LEFT + slot * 2.1, abs=0.01)  # Nov 3, first of the group
    assert float(drawn[3]["x"]) == pytest.approx(LEFT + slot * 1.1 + slot * 0.4, abs=0.01)  # Nov 2, second
    assert drawn[0]["tooltip"] == "Nov 1, Pushes: 8"
    root = parse(chart.svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-title c-desc"
    assert (root.find(f"{SVG}title").text, root.find(f"{SVG}desc").text) == ("Pushes", "Bars per day")
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert ticks == ["0", "2.5", "5", "7.5", "10"]
    assert chart.rows == [("Nov 1", ["8", "2"]), ("Nov 2", ["0", "1"]), ("Nov 3", ["3", "0"])]


def test_counts_get_whole_ticks():
    def ticks(largest: int) -> list[str]:
        chart = Chart("n", "t", "d", ["a"], [Series("s", [largest])], counts=True)
        return [t.text for t in parse(chart.svg).iter(f"{SVG}text") if t.get("text-anchor") == "end"]

    assert ticks(2) == ["0", "1", "2", "3", "4"]
    assert ticks(12) == ["0", "5", "10", "15", "20"]
    assert ticks(100) == ["0", "25", "50", "75", "100"]
    assert ticks(333) == ["0", "100", "200", "300", "400"]


def test_lines_skip_missing_values_and_text_is_escaped():
    chart = Chart("t", "<b>time</b>", "d", ["a", "b", "c", "d"], [Series("Median", [12.5, None, 40.0, 20.0])],
                  kind="lines", value_text=lambda v: f"{v:g} s")
    assert chart.top == 50
    root = parse(chart.svg)
    assert root.find(f"{SVG}title").text == "<b>time</b>"  # escaped in the markup, read back as text
    points = root.find(f".//{SVG}polyline").get("points").split()
    assert len(points) == 3  # b has no value: no point
    ys = [float(point.split(",")[1]) for point in points]
    assert ys == [pytest.approx(TOP + PLOT_HEIGHT * (1 - v / 50), abs=0.01) for v in (12.5, 40, 20)]
    assert [m["tooltip"] for m in marks(chart.svg)] == ["a, Median: 12.5 s", "c, Median: 40 s", "d, Median: 20 s"]
    assert chart.rows[1] == ("b", ["—"])
    assert Chart("e", "t", "d", ["a"], [Series("x", [0])]).empty
    assert not chart.empty


def test_percentiles_interpolate_like_postgresql():
    assert percentile_cont([4, 1, 3, 2], 0.5) == 2.5
    assert percentile_cont([4, 1, 3, 2], 0.9) == pytest.approx(3.7)
    assert percentile_cont([7], 0.9) == 7
    assert percentile_cont([], 0.5) is None
    database = sqlite3.connect(":memory:")  # the function SQLite gets (make run's database)
    database.create_aggregate("apparate_percentile", 2, _SqlitePercentile)
    database.execute("create table t (v real)")
    database.executemany("insert into t values (?)", [(4,), (1,), (3,), (2,), (None,)])
    assert database.execute("select apparate_percentile(v, 0.9) from t").fetchone()[0] == pytest.approx(3.7)


def push_at(instance, when, delivery: str, reason=PushReason.NO_RULE_MATCHED) -> None:
    event = PushEvent.objects.create(instance=instance, source="distribution", delivery_id=delivery, namespace="team",
                                     repository="app", tag=delivery, digest="sha256:" + "1" * 64,
                                     outcome=PushOutcome.SKIPPED, reason=reason, reason_detail="x")
    PushEvent.objects.filter(pk=event.pk).update(received_at=when)


def job_at(instance, finished, seconds: float, status=JobStatus.SUCCEEDED, size: int = 0) -> None:
    ConversionJob.objects.create(instance=instance, namespace="team", repository="app", source_tag="t",
                                 source_digest=f"sha256:{ConversionJob.objects.count():064d}", status=status,
                                 started_at=finished - timedelta(seconds=seconds), finished_at=finished,
                                 result_size=size if status == JobStatus.SUCCEEDED else None)


@pytest.fixture
def local(db):
    return Instance.objects.create(name="local", url="http://registry.invalid:5000")


def test_dashboard_figures_per_day_and_hour_aggregated_in_the_database(local, django_assert_max_num_queries):
    today, yesterday = NOW.replace(hour=9), NOW.replace(hour=9) - timedelta(days=1)
    for number in range(3):
        push_at(local, today, f"t{number}")
    push_at(local, yesterday, "y")
    push_at(local, today, "own", reason=PushReason.ACCELERATED_TAG)  # the console's own twin push: not counted
    push_at(local, NOW - timedelta(days=14), "old")  # before the first day shown
    for seconds in (10, 20, 30, 40):
        job_at(local, today, seconds, size=1000)
    job_at(local, yesterday, 5, size=500)
    job_at(local, today, 99, status=JobStatus.FAILED)
    with django_assert_max_num_queries(8):  # 3 per activity chart, 1 each for time and storage
        days, hours, time, storage = dashboard.charts(NOW)
    assert days.categories[-2:] == ["Nov 28", "Nov 29"] and len(days.categories) == 14
    assert days.categories[0] == "Nov 16"
    assert [(s.name, s.values[-2:], sum(s.values)) for s in days.series] == [
        ("Pushes", [1, 3], 4), ("Converted", [1, 4], 5), ("Failed", [0, 1], 1)]
    assert hours.categories[-1] == "17:00" and hours.categories[0] == "18:00" and len(hours.categories) == 24
    assert [s.values[hours.categories.index("09:00")] for s in hours.series] == [3, 4, 1]
    assert sum(hours.series[0].values) == 3  # yesterday 09:00 is more than 24 hours ago
    median, p90 = time.series
    assert (median.values[-1], p90.values[-1]) == (25.0, 37.0)  # of 10, 20, 30, 40 s
    assert (median.values[-2], p90.values[-2]) == (5.0, 5.0)
    assert median.values[:-2] == [None] * 12
    assert storage.series[0].values[-2:] == [500, 4000]


def test_dashboard_page_draws_the_charts_with_a_table_and_empty_states(local, client_as):
    viewer = client_as(Role.VIEWER)
    empty = viewer.get("/").content.decode()
    assert "No pushes or conversions in the last 14 days." in empty
    assert "No pushes or conversions in the last 24 hours." in empty
    assert "No conversion succeeded in the last 14 days." in empty
    assert "No accelerated image was written in the last 14 days." in empty
    assert "<svg" not in empty
    now = datetime.now(UTC)
    job_at(local, now, 12, size=3 * 1024 * 1024)
    push_at(local, now, "p1")
    page = viewer.get("/").content.decode()
    storage_svg = re.search(r'<svg class="chart-svg" id="storage-added-svg".*?</svg>', page, re.S)[0]
    assert [(m["data-series"], m["data-value"], m["tooltip"]) for m in marks(storage_svg)] == [
        ("Added", str(3 * 1024 * 1024), f"{now:%b} {now.day}, Added: 3.0\xa0MB")]
    time_svg = re.search(r'<svg class="chart-svg" id="conversion-time-svg".*?</svg>', page, re.S)[0]
    assert [m["data-value"] for m in marks(time_svg)] == ["12.0", "12.0"]  # median and 90th percentile
    table = re.search(r'<figure class="card chart" id="activity-day".*?<tbody>(.*?)</tbody>', page, re.S)[1]
    assert f'<tr><th scope="row">{now:%b} {now.day}</th><td class="num">1</td><td class="num">1</td>' \
           '<td class="num">0</td></tr>' in table
    assert "No pushes or conversions in the last 14 days." not in page
