"""Template helpers of every page: menu links, sortable table headers, pagination.

Load with `{% load layout_tags %}`.
"""

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from core.text import is_hidden

register = template.Library()


# The main menu: (URL name, label), in display order.
MAIN_MENU = (
    ("dashboard", "Dashboard"),
    ("registries:list", "Instances"),
    ("rules:list", "Rules"),
    ("pipeline:images", "Images"),
    ("pipeline:jobs", "Jobs"),
    ("clusters:list", "Clusters"),
    ("audit", "Audit"),
)


@register.simple_tag(takes_context=True)
def main_menu(context) -> str:
    """The main-menu links; the entry whose path is the longest prefix of the page's path is
    marked active (`/rules/jobs/5/` belongs to Jobs, not Rules; `/` only to the dashboard)."""
    request = context.get("request")
    path = request.path if request is not None else ""
    entries = [(reverse(name), label) for name, label in MAIN_MENU]
    prefixes = [href for href, _ in entries if path == href or (href != "/" and path.startswith(href))]
    active = max(prefixes, key=len, default=None)
    links = [
        format_html('<a class="menu-item active" href="{}" aria-current="page">{}</a>', href, label)
        if href == active
        else format_html('<a class="menu-item" href="{}">{}</a>', href, label)
        for href, label in entries
    ]
    return mark_safe("\n".join(links))  # noqa: S308 - each link is built by format_html


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


@register.filter
def shown_when(form, field_name: str) -> str:
    """`name=value` when the form shows `field_name` only while its field `name` has that value
    (a form's `shown_when` mapping; app.js hides the field otherwise); "" for fields always shown."""
    return (getattr(form, "shown_when", None) or {}).get(field_name, "")


@register.inclusion_tag("console/_pagination.html", takes_context=True)
def pagination(context, page):
    """Previous/next links and "page X of Y" for a Paginator page, keeping the current filters."""
    query = context["request"].GET.copy()
    query.pop("page", None)
    return {"page": page, "query": query.urlencode()}


@register.simple_tag
def copy_button(value, what: str = "") -> str:
    """A small button that copies `value` (an address, a digest, a URL, a command) to the clipboard.

    None for a value with hidden characters (bidi controls, zero-width spaces: core/text.py): the
    page shows them revealed, and a copy would carry them along unseen."""
    if any(is_hidden(character) for character in str(value)):
        return ""
    return format_html('<button type="button" class="copy small" data-copy-value="{}" aria-label="Copy {}" '
                       'title="Copy {}">Copy</button>', value, what or value, what or "to the clipboard")


@register.simple_tag
def copyable(value, what: str = "") -> str:
    """`value` in monospace, wrapping anywhere, with a copy button after it; "—" when empty."""
    if not value:
        return "—"
    return format_html('<span class="copyable"><span class="mono">{}</span> {}</span>', value,
                       copy_button(value, what))


@register.simple_tag
def digest(value, what: str = "digest") -> str:
    """A content digest, short (`sha256:0123456789ab…`) with the full value one click away (a
    <details> that opens in place) and a copy button; "—" when empty."""
    if not value:
        return "—"
    algorithm, _, hexdigits = str(value).partition(":")
    short = f"{algorithm}:{hexdigits[:12]}…" if len(hexdigits) > 12 else str(value)
    return format_html('<span class="digest"><details><summary class="mono" title="Show the whole digest">{}'
                       '</summary><span class="mono full">{}</span></details> {}</span>', short, value,
                       copy_button(value, what))
