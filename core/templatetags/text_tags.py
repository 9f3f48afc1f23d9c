"""Template filter `reveal`: text from outside with hidden characters made visible and mixed scripts
flagged (see core/text.py). A builtin of every template (settings TEMPLATES builtins)."""

from django import template

from core.text import reveal as reveal_text

register = template.Library()


@register.filter
def reveal(value):
    """{{ event.repository|reveal }}: escaped, `\\u202e` markers for invisible characters, homoglyphs flagged."""
    return reveal_text(value)
