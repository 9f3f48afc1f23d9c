"""The help pages: the README's sections, rendered inside the console (no internet needed).

README.md is split at its `## ` headings; each section becomes a page (`/help/<slug>/`), rendered
with Python-Markdown (fenced code, tables). The README is the project's own text, so its HTML is
trusted; it is read once per process and kept.
"""

import functools
import re
from dataclasses import dataclass

import markdown
from django.conf import settings
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

README = settings.BASE_DIR / "README.md"
EXTENSIONS = ["fenced_code", "tables", "sane_lists"]


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    text: str  # Markdown, without its heading

    @property
    def html(self) -> SafeString:
        return mark_safe(markdown.markdown(self.text, extensions=EXTENSIONS))  # noqa: S308 - our own README


@functools.cache
def sections() -> tuple[Section, ...]:
    """The README's `## ` sections in order; the text before the first is the "Overview"."""
    if not README.is_file():  # an installation without the README: no help pages, no error
        return ()
    found, title, lines = [], "Overview", []
    in_code = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"## (.+)", line) if not in_code else None
        if heading:
            found.append((title, lines))
            title, lines = heading.group(1).strip(), []
        elif not (title == "Overview" and line.startswith("# ")):
            lines.append(line)
    found.append((title, lines))
    texts = [(name, "\n".join(body).strip()) for name, body in found]
    return tuple(Section(slugify(name), name, text) for name, text in texts if text)


def section(slug: str) -> Section | None:
    return next((item for item in sections() if item.slug == slug), None)
