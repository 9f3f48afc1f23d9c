"""Charts drawn on the server as SVG: no script, no library, nothing from a CDN.

A `Chart` holds categories (days, hours) and one or more `Series` of values; `svg` draws them as
grouped bars or as lines with points, on a value axis that starts at 0 and ends at a round number.
Every mark carries its category, series and value as data- attributes and a <title> (a tooltip),
the SVG has a title and a description for screen readers, and `rows` gives the same figures for
the table shown beside it. Colours come from CSS classes (`series-1`, `series-2`...) in app.css:
the Content-Security-Policy allows no inline style.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 40  # margins around the plot area
MAX_AXIS_LABELS = 8  # category labels written under the axis (every n-th when there are more)
GRID_LINES = 4


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float | None]  # one per category; None: no value (a gap in a line)


def plain(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


@dataclass
class Chart:
    """A chart of `series` over `categories` (see the module doc)."""

    id: str
    title: str
    description: str
    categories: list[str]
    series: list[Series]
    kind: str = "bars"  # or "lines"
    value_text: Callable[[float], str] = plain  # how values read in labels, tooltips and the table
    empty_text: str = "No data yet."
    axis_label: str = ""
    counts: bool = False  # whole numbers: ticks at whole numbers too
    legend: list[tuple[int, str]] = field(init=False)

    def __post_init__(self):
        self.legend = [(number, series.name) for number, series in enumerate(self.series, 1)]

    @property
    def empty(self) -> bool:
        return not any(value for series in self.series for value in series.values)

    @property
    def top(self) -> float:
        """The axis maximum: the largest value rounded up to 1, 2, 2.5 or 5 times a power of ten; for
        counts, GRID_LINES times such a step that is a whole number (so every tick is one)."""
        largest = max((value for series in self.series for value in series.values if value), default=0)
        if largest <= 0:
            return GRID_LINES if self.counts else 1
        if self.counts:
            tick = largest / GRID_LINES
            power = 10 ** max(math.floor(math.log10(tick)), 0)
            return int(GRID_LINES * next(step * power for step in (1, 2, 2.5, 5, 10)
                                         if step * power >= tick and float(step * power).is_integer()))
        power = 10 ** math.floor(math.log10(largest))
        return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= largest)

    @property
    def rows(self) -> list[tuple[str, list[str]]]:
        """(category, the value of each series as text) for the table alternative."""
        return [(category, ["—" if series.values[index] is None else self.value_text(series.values[index])
                            for series in self.series]) for index, category in enumerate(self.categories)]

    def _y(self, value: float) -> float:
        return round(TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / self.top), 2)

    def _slot(self) -> float:
        return (WIDTH - LEFT - RIGHT) / max(len(self.categories), 1)

    def _axes(self) -> SafeString:
        grid = []
        for step in range(GRID_LINES + 1):
            value = self.top * step / GRID_LINES
            y = self._y(value)
            grid.append(format_html('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                                    '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>',
                                    LEFT, WIDTH - RIGHT, y, y, LEFT - 6, y + 4, self.value_text(value)))
        every = math.ceil(len(self.categories) / MAX_AXIS_LABELS) or 1
        slot = self._slot()
        labels = [format_html('<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                              round(LEFT + slot * (index + 0.5), 2), HEIGHT - BOTTOM + 16, category)
                  for index, category in enumerate(self.categories) if (len(self.categories) - 1 - index) % every == 0]
        axis = format_html('<text class="axis-label" x="12" y="{}" transform="rotate(-90 12 {})" '
                           'text-anchor="middle">{}</text>', (HEIGHT - BOTTOM + TOP) / 2, (HEIGHT - BOTTOM + TOP) / 2,
                           self.axis_label) if self.axis_label else ""
        return mark_safe("".join([*grid, *labels, axis]))  # noqa: S308 - every part is built by format_html

    def _mark(self, number: int, series: Series, index: int, shape: str, **geometry) -> SafeString:
        value = series.values[index]
        attributes = format_html_join(" ", '{}="{}"', geometry.items())
        return format_html('<{} class="mark series-{}" data-series="{}" data-category="{}" data-value="{}" {}>'
                           "<title>{}, {}: {}</title></{}>", shape, number, series.name, self.categories[index],
                           value, attributes, self.categories[index], series.name, self.value_text(value), shape)

    def _bars(self) -> SafeString:
        slot = self._slot()
        width = slot * 0.8 / len(self.series)
        marks = []
        for number, series in enumerate(self.series, 1):
            for index, value in enumerate(series.values):
                if not value:
                    continue
                y = self._y(value)
                marks.append(self._mark(number, series, index, "rect", x=round(LEFT + slot * (index + 0.1) + width * (
                    number - 1), 2), y=y, width=round(width, 2), height=round(HEIGHT - BOTTOM - y, 2)))
        return mark_safe("".join(marks))  # noqa: S308 - every part is built by format_html

    def _lines(self) -> SafeString:
        slot = self._slot()
        parts = []
        for number, series in enumerate(self.series, 1):
            points = [(index, round(LEFT + slot * (index + 0.5), 2), self._y(value))
                      for index, value in enumerate(series.values) if value is not None]
            if len(points) > 1:
                parts.append(format_html('<polyline class="line series-{}" points="{}"/>', number,
                                         " ".join(f"{x},{y}" for _, x, y in points)))
            parts.extend(self._mark(number, series, index, "circle", cx=x, cy=y, r=3.5) for index, x, y in points)
        return mark_safe("".join(parts))  # noqa: S308 - every part is built by format_html

    @property
    def svg(self) -> SafeString:
        body = self._bars() if self.kind == "bars" else self._lines()
        return format_html(
            '<svg class="chart-svg" id="{}-svg" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title {}-desc" '
            'xmlns="http://www.w3.org/2000/svg"><title id="{}-title">{}</title><desc id="{}-desc">{}</desc>'
            '<g class="axes">{}</g><g class="marks">{}</g></svg>',
            self.id, WIDTH, HEIGHT, self.id, self.id, self.id, self.title, self.id, self.description, self._axes(),
            body)
