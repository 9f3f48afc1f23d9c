"""Template filters for durations and times (core/formatting.py); a builtin of every template.

    {{ job.duration|duration }}   "2 min 5 s"
    {{ job.created_at|ago }}      <time datetime=… title="2026-11-29 17:34:01 UTC">5 min ago</time>
    {{ rule.updated_at|at }}      <time datetime=… title="…">2026-11-29 17:34</time>
"""

from django import template

from core import formatting

register = template.Library()


@register.filter
def duration(value) -> str:
    return formatting.format_duration(value)


@register.filter
def ago(value):
    return formatting.relative_time(value)


@register.filter
def at(value):
    return formatting.absolute_time(value)
