"""The naming rule of accelerated images, in one place: the twin of `<tag>` is
`<tag><APPARATE_ACCELERATED_SUFFIX>` (`1.0` → `1.0-apparate`), in the same repository.

Everything that builds, recognizes or strips a twin tag calls these functions, so the suffix
setting is read nowhere else.
"""

from django.conf import settings


def suffix() -> str:
    """The configured suffix, for texts that explain the rule and for the converter's refusal of
    suffixed sources."""
    return settings.APPARATE_ACCELERATED_SUFFIX


def twin_tag(tag: str) -> str:
    """The tag of the accelerated twin of `tag`."""
    return tag + suffix()


def is_twin_tag(tag: str) -> bool:
    """True when `tag` is named like an accelerated twin (and so is never converted itself)."""
    return tag.endswith(suffix())


def source_tag(tag: str) -> str:
    """The source tag a twin tag is named after (`1.0-apparate` → `1.0`)."""
    return tag.removesuffix(suffix())
