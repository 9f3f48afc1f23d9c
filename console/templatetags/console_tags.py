"""Template helpers of the console shell: menu links, sortable table headers, pagination.

Load with `{% load console_tags %}`.
"""

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

register = template.Library()


def _section(request) -> str | None:
    """The menu section of the current page: the app namespace, or the url name for shell pages."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    return match.namespace or match.url_name


@register.simple_tag(takes_context=True)
def menu_link(context, url_name: str, label: str, section: str, disabled_title: str = "") -> str:
    """A main-menu entry; `aria-current="page"` on the active section.

    If `url_name` does not resolve (an app not built yet) or `disabled_title` is given, the entry
    renders as a visibly disabled label instead of a link, so the menu never breaks a page.
    """
    href = None
    if not disabled_title:
        try:
            href = reverse(url_name)
        except NoReverseMatch:
            disabled_title = "Not available yet."
    if href is None:
        return format_html(
            '<span class="menu-item disabled" aria-disabled="true" title="{}">{}</span>', disabled_title, label
        )
    if _section(context.get("request")) == section:
        return format_html('<a class="menu-item active" href="{}" aria-current="page">{}</a>', href, label)
    return format_html('<a class="menu-item" href="{}">{}</a>', href, label)


@register.simple_tag(takes_context=True)
def sort_header(context, field: str, label: str, default: str = "", param: str = "sort") -> str:
    """A sortable column header link: toggles `?sort=field` / `?sort=-field`, keeping other filters.

    The current order is read from the request (`default` when absent, e.g. "-timestamp"); the
    link carries `aria-sort` on the active column.
    """
    request = context["request"]
    current = request.GET.get(param) or default
    query = request.GET.copy()
    query.pop("page", None)
    if current == field:
        query[param], state, aria = f"-{field}", "asc", "ascending"
    elif current == f"-{field}":
        query[param], state, aria = field, "desc", "descending"
    else:
        query[param], state, aria = field, "", "none"
    return format_html(
        '<a class="sort {}" href="?{}" aria-sort="{}">{}</a>', state, query.urlencode(), aria, label
    )


@register.inclusion_tag("console/_pagination.html", takes_context=True)
def pagination(context, page):
    """Previous/next links and "page X of Y" for a Paginator page, keeping the current filters."""
    query = context["request"].GET.copy()
    query.pop("page", None)
    return {"page": page, "query": query.urlencode()}
