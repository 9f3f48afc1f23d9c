r"""Showing text from outside (webhook payloads, registry answers) so that it cannot pretend.

Bidi controls can reverse what follows them (`app\u202egnp.exe` reads as `appexe.png`),
zero-width and other invisible characters make two different names look the same, and letters from
another script (a Cyrillic `а` in `аpp`) imitate Latin ones. `reveal()` escapes the text and:
- replaces every invisible, formatting or non-standard space character with a visible marker
  (`\u202e` in a `.hidden-char` span whose title names the character);
- when the letters come from more than one script, marks the letters outside the main script
  (`<mark class="foreign-letter">`) and adds a "mixed scripts" badge naming the scripts.
"""

import unicodedata
from collections import Counter

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# Categories that print nothing, or move or join text: format (bidi controls, zero-width space,
# joiners, BOM, soft hyphen, tags), controls, private use, unassigned, line and paragraph separators.
HIDDEN_CATEGORIES = {"Cf", "Cc", "Co", "Cn", "Zl", "Zp"}
# Letters and marks that render as blank or alter the character before them without a trace.
HIDDEN_CHARACTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}
VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0))
# Scripts that one language writes together (Japanese, Korean): not a sign of spoofing.
SCRIPT_FAMILIES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "BOPOMOFO": "CJK"}


def is_hidden(character: str) -> bool:
    """True for a character a reader cannot see as itself (every space but the plain one included)."""
    if character == " ":
        return False
    code = ord(character)
    return (unicodedata.category(character) in HIDDEN_CATEGORIES or unicodedata.category(character) == "Zs"
            or character in HIDDEN_CHARACTERS or any(code in block for block in VARIATION_SELECTORS))


def script_of(character: str) -> str | None:
    """The script of a letter, from its Unicode name (LATIN, CYRILLIC, GREEK, CJK, FULLWIDTH...); None otherwise."""
    if not unicodedata.category(character).startswith("L"):
        return None
    name = unicodedata.name(character, "")
    script = name.split(" ", 1)[0] if name else "UNKNOWN"
    return SCRIPT_FAMILIES.get(script, script)


def _marker(character: str) -> str:
    code = f"U+{ord(character):04X}"
    name = unicodedata.name(character, "unnamed character")
    escaped = f"\\u{ord(character):04x}" if ord(character) <= 0xFFFF else f"\\U{ord(character):08x}"
    return format_html('<span class="hidden-char" title="{} {}">{}</span>', code, name, escaped)


def reveal(text) -> SafeString:
    """`text` escaped for HTML, with hidden characters made visible and mixed scripts flagged."""
    text = "" if text is None else str(text)
    scripts = Counter(script for script in map(script_of, text) if script)
    main = scripts.most_common(1)[0][0] if scripts else None
    parts = []
    for character in text:
        if is_hidden(character):
            parts.append(_marker(character))
        elif len(scripts) > 1 and script_of(character) not in (None, main):
            parts.append(format_html('<mark class="foreign-letter" title="{}">{}</mark>',
                                     unicodedata.name(character, ""), character))
        else:
            parts.append(escape(character))
    if len(scripts) > 1:
        names = ", ".join(sorted(script.title() for script in scripts))
        parts.append(format_html(' <span class="badge badge-amber mixed-script" title="Letters from several scripts '
                                 '({}); some may imitate others.">mixed scripts</span>', names))
    return mark_safe("".join(parts))  # noqa: S308 - every part above is escaped or built by format_html
