"""Template helpers of the clusters pages: status badges in their colours."""

from django import template
from django.utils.html import format_html

from clusters.choices import colour

register = template.Library()


@register.simple_tag
def status_badge(value: str, label: str = "") -> str:
    """<span class="badge badge-<colour>">label</span> for any status of this app."""
    return format_html('<span class="badge badge-{}">{}</span>', colour(value), label or value)
