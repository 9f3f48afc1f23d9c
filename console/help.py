"""The help pages: the README's sections, rendered inside the console (no internet needed).

README.md is split at its `## ` headings; each section becomes a page (`/help/<slug>/`), rendered
with Python-Markdown (fenced code, tables, heading ids). The README's `#anchor` links lead to the
page that holds the heading. The README is the project's own text, so its HTML is trusted; it is
read once per process and kept.
"""

import functools
import re
from dataclasses import dataclass

import markdown
from django.conf import settings
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify
from markdown.extensions.toc import slugify as heading_anchor

README = settings.BASE_DIR / "README.md"
EXTENSIONS = ["fenced_code", "tables", "sane_lists", "toc"]  # toc: headings get GitHub's anchors as ids
ANCHOR_LINK = re.compile(r'href="#([^"]+)"')


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    text: str  # Markdown, without its heading

    @property
    def html(self) -> SafeString:
        html = markdown.markdown(self.text, extensions=EXTENSIONS)
        return mark_safe(ANCHOR_LINK.sub(self._link, html))  # noqa: S308 - our own README

    def _link(self, match: re.Match) -> str:
        """A README `#anchor` link, pointed at the help page that holds the heading."""
        anchor = match.group(1)
        page = anchor_pages().get(anchor)
        if page is None or page == self.slug:
            return match.group(0)
        target = reverse("help-section", args=[page])
        return f'href="{target}"' if anchor == page else f'href="{target}#{anchor}"'


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


@functools.cache
def anchor_pages() -> dict[str, str]:
    """The anchor of every README heading (as GitHub and the toc extension write it) → the slug of
    the help page it is on."""
    pages = {}
    for item in sections():
        pages[heading_anchor(item.title, "-")] = item.slug
        for heading in re.finditer(r"^#{3,6} (.+)$", item.text, re.MULTILINE):
            pages.setdefault(heading_anchor(heading.group(1).strip(), "-"), item.slug)
    return pages


def section(slug: str) -> Section | None:
    return next((item for item in sections() if item.slug == slug), None)
