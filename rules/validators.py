"""Field validators for acceleration rules, shared by the model, forms and serializers.

Patterns use RE2 syntax (google-re2) and always match the whole name. RE2 runs in time linear in
the input, so no pattern, however pathological, can hang the matcher. Memory is bounded too: each
pattern gets a fixed RE2 memory budget (program and DFA cache), patterns whose compiled program is
too large are refused, and the cache of compiled patterns used by the matcher holds a fixed number
of them, so it can never grow beyond PATTERN_CACHE_SIZE × PATTERN_MAX_MEM. Validation compiles
without caching: a pattern someone merely typed or checked never stays in memory.
"""

import functools
import posixpath

import re2
from django.core.exceptions import ValidationError

from converter.reference import COMPONENT

MAX_PATTERN_LENGTH = 1024
# RE2's budget for one compiled pattern (program plus DFA cache); a pattern that needs more fails to
# compile, and a DFA that fills it falls back to RE2's slower (still linear) matcher.
PATTERN_MAX_MEM = 256 << 10
# Largest compiled program (RE2 instructions) accepted: sane name patterns need a few hundred;
# a Unicode class repeated hundreds of times needs hundreds of thousands.
MAX_PROGRAM_SIZE = 5000
# Compiled patterns the matcher keeps; with PATTERN_MAX_MEM this bounds the cache at 32 MiB.
PATTERN_CACHE_SIZE = 128
MAX_NAMESPACE_LENGTH = 255
MAX_PRIORITIZED_FILES = 256
MAX_PATH_LENGTH = 1024

# One repository path component, as in the OCI distribution spec.


_SIMPLER = r"Use narrower character classes (e.g. [a-z0-9] instead of \p{L}) or fewer repetitions."


class PatternError(ValueError):
    """The text is not an acceptable RE2 pattern; the message is RE2's own or a size limit."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    options.log_errors = False
    return options


def compile_uncached(pattern: str):
    """Compile `pattern` once, without caching; raises PatternError with the reason a person can act on."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"The pattern is longer than {MAX_PATTERN_LENGTH} characters.")
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        if reason.startswith("pattern too large"):
            raise PatternError(f"The pattern is too complex: it needs more than {PATTERN_MAX_MEM >> 10} KiB "
                               f"to compile. {_SIMPLER}") from None
        raise PatternError(f"Invalid RE2 pattern: {reason}.") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise PatternError(f"The pattern is too complex: it compiles to {compiled.programsize} instructions, "
                           f"more than the {MAX_PROGRAM_SIZE} allowed. {_SIMPLER}")
    return compiled


@functools.lru_cache(maxsize=PATTERN_CACHE_SIZE)
def compile_pattern(pattern: str):
    """The compiled RE2 program for a saved rule's `pattern` (cached for the matcher)."""
    return compile_uncached(pattern)


def full_match(pattern: str, text: str) -> bool:
    """True when `pattern` (RE2, already valid) matches all of `text`."""
    return compile_pattern(pattern).fullmatch(text) is not None


def validate_pattern(value: str) -> None:
    """A blank pattern (match everything) or one that RE2 compiles within its limits."""
    if not value:
        return
    try:
        compile_uncached(value)
    except PatternError as error:
        raise ValidationError(str(error), code="invalid_pattern") from None


def validate_namespace(value: str) -> None:
    """Exactly one namespace, written as a repository path component (no pattern, no slash)."""
    if "/" in value:
        raise ValidationError(
            "Give exactly one namespace, without slashes; match deeper paths with the repository pattern.",
            code="invalid_namespace",
        )
    if len(value) > MAX_NAMESPACE_LENGTH:
        raise ValidationError(f"A namespace has at most {MAX_NAMESPACE_LENGTH} characters.", code="invalid_namespace")
    if not COMPONENT.fullmatch(value):
        raise ValidationError(
            f"'{value}' is not a namespace name: use lower-case letters and digits, separated by "
            "'.', '_', '__' or dashes. Patterns are not allowed here.",
            code="invalid_namespace",
        )


def normalize_prioritized_files(value) -> list[str]:
    """Clean list of prioritized file paths: absolute, normalized, unique, in the given order.

    `a/b`, `/a/b` and `./a/b` name the same file in a layer, so all become `/a/b`.
    """
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give the prioritized files as a list of paths.", code="invalid_paths")
    paths: list[str] = []
    for raw in value:
        text = raw.strip()
        if not text:
            continue
        if len(text) > MAX_PATH_LENGTH:
            raise ValidationError(f"A file path has at most {MAX_PATH_LENGTH} characters.", code="invalid_paths")
        if any(ord(character) < 32 or ord(character) == 127 for character in text):
            raise ValidationError(f"'{text}' contains control characters.", code="invalid_paths")
        if ".." in text.split("/"):
            raise ValidationError(f"'{text}' contains '..'; give the path inside the image.", code="invalid_paths")
        path = posixpath.normpath("/" + text.lstrip("/"))
        if path == "/":
            raise ValidationError(f"'{text}' is the root directory, not a file.", code="invalid_paths")
        if path not in paths:
            paths.append(path)
    if len(paths) > MAX_PRIORITIZED_FILES:
        raise ValidationError(f"List at most {MAX_PRIORITIZED_FILES} prioritized files.", code="invalid_paths")
    return paths


def validate_prioritized_files(value) -> None:
    normalize_prioritized_files(value)
