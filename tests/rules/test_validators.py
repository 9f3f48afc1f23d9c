"""Field validators: RE2 patterns, namespaces and prioritized file paths."""

import pytest
from django.core.exceptions import ValidationError

from rules.validators import (
    MAX_PATTERN_LENGTH,
    MAX_PRIORITIZED_FILES,
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
    with pytest.raises(ValidationError, match="pattern too large"):
        validate_pattern(r"\pL{1000}")


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
