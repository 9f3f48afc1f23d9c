"""Template tag `startup_figure`: what a node fetches to start a twin, as the sentence every page
shows (pipeline.startup) beside a small SVG bar comparing it with a full pull.

Load with `{% load startup_tags %}`; `{% startup_figure twin %}` takes a twin row or a Figure.
"""

from django import template

from pipeline import startup

register = template.Library()


@register.inclusion_tag("pipeline/_startup.html")
def startup_figure(subject) -> dict:
    figure = subject if isinstance(subject, startup.Figure) else startup.figure(subject)
    return {"figure": figure}
