"""Database expressions Django lacks, computed in the database on PostgreSQL and on SQLite alike.

`Percentile(expression, 0.9)` is PostgreSQL's `percentile_cont` (linear interpolation between the
two nearest values); SQLite gets the same function as `apparate_percentile`, registered on each
new connection (`register_sqlite_functions`). `Seconds(end, start)` is the time between two
timestamps in seconds, as a float.
"""

from django.db.models import Aggregate, FloatField, Func


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """percentile_cont as PostgreSQL computes it: the value at `fraction` of the sorted values,
    interpolated linearly between the two nearest; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


class _SqlitePercentile:
    """The aggregate SQLite calls for `apparate_percentile(value, fraction)`."""

    def __init__(self):
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value, fraction) -> None:
        if value is not None:
            self.values.append(float(value))
            self.fraction = float(fraction)

    def finalize(self) -> float | None:
        return percentile_cont(self.values, self.fraction)


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    """connection_created receiver: adds apparate_percentile to each new SQLite connection."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("apparate_percentile", 2, _SqlitePercentile)


class Percentile(Aggregate):
    """The `fraction` percentile (0 to 1) of an expression over the group, interpolated (see the module doc)."""

    function = "percentile_cont"
    name = "Percentile"
    output_field = FloatField()
    template = "%(function)s(%(fraction)r) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        fraction = float(fraction)
        if not 0 <= fraction <= 1:
            raise ValueError(f"A percentile is between 0 and 1, not {fraction}.")
        super().__init__(expression, fraction=fraction, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="apparate_percentile",
                           template="%(function)s(%(expressions)s, %(fraction)r)", **extra)


class Seconds(Func):
    """Seconds from `start` to `end` (two timestamps), as a float."""

    output_field = FloatField()
    arity = 2
    template = "CAST(EXTRACT(EPOCH FROM (%(expressions)s)) AS double precision)"
    arg_joiner = " - "

    def __init__(self, end, start, **extra):
        super().__init__(end, start, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="((julianday(%(expressions)s)) * 86400.0)",
                           arg_joiner=") - julianday(", **extra)
