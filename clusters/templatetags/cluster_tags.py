"""Template helpers of the clusters pages: status badges in their colours, and which labelled nodes
of a cluster are ready to lazy-pull."""

from django import template
from django.utils.html import format_html

from clusters.choices import LazyPull, colour
from clusters.models import Node

register = template.Library()


@register.simple_tag
def status_badge(value: str, label: str = "") -> str:
    """<span class="badge badge-<colour>">label</span> for any status of this app."""
    return format_html('<span class="badge badge-{}">{}</span>', colour(value), label or value)


@register.inclusion_tag("clusters/_lazy_pull_summary.html")
def lazy_pull_summary(cluster) -> dict:
    """The labelled nodes of a cluster: those ready to lazy-pull, and the others with why not."""
    labelled = list(Node.objects.filter(cluster=cluster, labelled=True).order_by("name")
                    .only("name", "lazy_pull", "lazy_pull_reason"))
    return {"cluster": cluster, "labelled": labelled,
            "ready": [n for n in labelled if n.lazy_pull == LazyPull.READY],
            "not_ready": [n for n in labelled if n.lazy_pull != LazyPull.READY]}
