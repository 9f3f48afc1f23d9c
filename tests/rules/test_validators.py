"""Field validators: RE2 patterns, namespaces and prioritized file paths."""

import pytest
from django.core.exceptions import ValidationError

from rules.validators import (
    MAX_PATTERN_LENGTH,
    MAX_PRIORITIZED_FILES,
    MAX_PROGRAM_SIZE,
    PATTERN_CACHE_SIZE,
    PATTERN_MAX_MEM,
    compile_pattern,
    full_match,
    normalize_prioritized_files,
    validate_namespace,
    validate_pattern,
)


def test_bad_pattern_reports_the_compiler_message():
    with pytest.raises(ValidationError) as error:
        validate_pattern("(unclosed")
    assert error.value.messages == ["Invalid RE2 pattern: missing ): (unclosed."]


def test_lookaround_is_refused_because_re2_has_none():
    with pytest.raises(ValidationError, match="invalid perl operator"):
        validate_pattern("app(?=-prod)")


def test_too_long_pattern_is_refused_before_compiling():
    validate_pattern("a" * MAX_PATTERN_LENGTH)
    with pytest.raises(ValidationError, match=f"longer than {MAX_PATTERN_LENGTH} characters"):
        validate_pattern("a" * (MAX_PATTERN_LENGTH + 1))


def test_pattern_that_needs_too_much_memory_is_refused():
    with pytest.raises(ValidationError) as error:
        validate_pattern(r"\pL{1000}")
    assert error.value.messages == [
        "The pattern is too complex: it needs more than 256 KiB to compile. Use narrower character classes "
        "(e.g. [a-z0-9] instead of \\p{L}) or fewer repetitions."
    ]


def test_program_size_limit_is_exact():
    # Each literal is one RE2 instruction, plus 4 around them: 4996 literals compile to exactly 5000.
    assert MAX_PROGRAM_SIZE == 5000
    validate_pattern("a{1000}b{1000}c{1000}d{1000}e{996}")
    with pytest.raises(ValidationError) as error:
        validate_pattern("a{1000}b{1000}c{1000}d{1000}e{997}")
    assert error.value.messages[0].startswith(
        "The pattern is too complex: it compiles to 5001 instructions, more than the 5000 allowed.")


def test_the_reviewers_unicode_pattern_is_refused_and_the_cache_is_bounded_by_memory():
    # `\p{L}{250}` took about 4 MB per compiled copy under the old 8 MiB budget.
    with pytest.raises(ValidationError, match="too complex"):
        validate_pattern(r"\p{L}{250}")
    assert PATTERN_MAX_MEM == 256 << 10
    assert compile_pattern.cache_info().maxsize == PATTERN_CACHE_SIZE == 128
    assert PATTERN_CACHE_SIZE * PATTERN_MAX_MEM <= 32 << 20


def test_validation_does_not_fill_the_matcher_cache():
    compile_pattern.cache_clear()
    for number in range(50):
        validate_pattern(f"release-{number}-[a-z]+")
    assert compile_pattern.cache_info().currsize == 0


def test_blank_pattern_is_valid():
    validate_pattern("")


def test_compiled_patterns_are_cached():
    assert compile_pattern(r"v\d+") is compile_pattern(r"v\d+")


def test_full_match_semantics():
    assert full_match("app", "app")
    assert not full_match("app", "app2")
    assert not full_match("app", "my-app")
    assert full_match("app.*", "app2")


def test_pathological_pattern_runs_in_linear_time():
    # Backtracking engines take exponential time here; RE2 answers at once (pytest-timeout guards).
    text = "a" * 200_000 + "!"
    assert not full_match("(a+)+$", text)
    assert not full_match("(a|aa)+", text)
    assert not full_match("(.*a){20}", "a" * 10_000 + "b")


@pytest.mark.parametrize("value", ["team", "team-a", "team_a", "a.b", "library", "a__b", "x1"])
def test_valid_namespaces(value):
    validate_namespace(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("team/sub", "without slashes"),
        ("team.*", "Patterns are not allowed"),
        ("Team", "lower-case"),
        ("-team", "lower-case"),
        ("te am", "lower-case"),
        ("a" * 256, "at most 255"),
    ],
)
def test_invalid_namespaces(value, message):
    with pytest.raises(ValidationError, match=message):
        validate_namespace(value)


def test_prioritized_files_are_normalized_deduplicated_and_ordered():
    paths = normalize_prioritized_files(["usr/bin/python3", "./etc/app.conf", "/usr/bin/python3", "  ", "/a//b/"])
    assert paths == ["/usr/bin/python3", "/etc/app.conf", "/a/b"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/usr/bin/python3", "list of paths"),
        ([1, 2], "list of paths"),
        (["/../etc/passwd"], "contains '..'"),
        (["/"], "root directory"),
        (["/a\x00b"], "control characters"),
        (["/" + "a" * 1100], "at most 1024 characters"),
        ([f"/f{i}" for i in range(MAX_PRIORITIZED_FILES + 1)], f"at most {MAX_PRIORITIZED_FILES}"),
    ],
)
def test_bad_prioritized_files(value, message):
    with pytest.raises(ValidationError, match=message):
        normalize_prioritized_files(value)
