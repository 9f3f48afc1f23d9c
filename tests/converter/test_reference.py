"""Image address parsing: what is accepted, what is refused and with which message."""

import pytest

from converter.reference import ImageReference, InvalidReference, parse_on_host, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registry.example.com/team/app:1.0", ImageReference("registry.example.com", "team", "app", tag="1.0")),
        ("Registry.Example.com:5000/team/app", ImageReference("registry.example.com:5000", "team", "app")),
        ("127.0.0.1:5000/team/sub/app:v2-rc.1", ImageReference("127.0.0.1:5000", "team", "sub/app", tag="v2-rc.1")),
        (f"host/team/app@{DIGEST}", ImageReference("host", "team", "app", digest=DIGEST)),
        (f"host/team/app:1@{DIGEST}", ImageReference("host", "team", "app", tag="1", digest=DIGEST)),
        ("[::1]:5000/team/my__app.x-y:latest", ImageReference("[::1]:5000", "team", "my__app.x-y", tag="latest")),
        ("  localhost/ns/repo  ", ImageReference("localhost", "ns", "repo")),
    ],
)
def test_valid_addresses_parse_into_parts(text, expected):
    parsed = parse_reference(text)
    assert parsed == expected
    assert parse_reference(str(parsed)) == parsed


def test_reference_defaults_to_latest_and_prefers_digest():
    assert parse_reference("h/ns/r").reference == "latest"
    assert parse_reference("h/ns/r:7").reference == "7"
    assert parse_reference(f"h/ns/r:7@{DIGEST}").reference == DIGEST
    assert str(parse_reference("h/ns/r:7").with_tag("7-apparate")) == "h/ns/r:7-apparate"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter an image address"),
        ("nginx", "needs the registry host"),
        ("host/app:1", "needs a namespace and a repository"),
        ("https://host/ns/app", "Leave out the scheme"),
        ("host/ns/App", "'App' is not a valid repository path component"),
        ("host/ns//app", "empty component"),
        ("host/ns/app:-bad", "'-bad' is not a valid tag"),
        ("host/ns/app@sha256:abc", "is not a valid digest"),
        ("host:99999/ns/app", "'99999' is not a valid port"),
        ("bad_host!/ns/app", "is not a valid registry host name"),
        ("host/ns/app name", "cannot contain spaces"),
        ("h/" + "a" * 5000, "longer than 4096"),
    ],
)
def test_invalid_addresses_are_refused_with_a_precise_message(text, message):
    with pytest.raises(InvalidReference, match=message):
        parse_reference(text)


def test_long_near_miss_component_is_refused():
    # A shape that makes backtracking parsers explode; pytest-timeout guards the run.
    with pytest.raises(InvalidReference, match="not a valid repository path component"):
        parse_reference("h/ns/" + "a-" * 120 + "!")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("team-a/app:v1", "reg.local:5000/team-a/app:v1"),  # the short form: the instance's host is implied
        ("  team/sub/app  ", "reg.local:5000/team/sub/app"),
        ("REG.local:5000/team/app:1", "reg.local:5000/team/app:1"),
        ("reg.local:5000/team/app:1", "reg.local:5000/team/app:1"),
        ("other.example.com/team/app:1", "other.example.com/team/app:1"),  # another registry: callers compare
        ("localhost/team/app", "localhost/team/app"),
        (f"team/app@{DIGEST}", f"reg.local:5000/team/app@{DIGEST}"),
    ],
)
def test_parse_on_host_accepts_the_short_form_and_full_addresses(text, expected):
    assert str(parse_on_host(text, "reg.local:5000")) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter an image address: namespace/repository:tag on reg.local:5000 (e.g. team/app:1.0), or the full "
             "address reg.local:5000/team/app:1.0."),
        ("   ", "Enter an image address: namespace/repository:tag on reg.local:5000 (e.g. team/app:1.0), or the "
                "full address reg.local:5000/team/app:1.0."),
        ("app:v1", "'app:v1' has no namespace: write namespace/repository:tag, e.g. team/app:v1 (the host "
                   "reg.local:5000 may be left out)."),
        ("reg.local:5000/app:v1", "The address needs a namespace and a repository after the host "
                                  "(reg.local:5000/namespace/repository); 'app' is only one of them."),
        ("reg.local:5000/", "The address needs a namespace and a repository after the host "
                            "(reg.local:5000/namespace/repository); nothing follows it."),
        ("team/App:1", "'App' is not a valid repository path component (lower-case letters and digits, separated "
                       "by '.', '_', '__' or dashes)."),
        ("team/app:-x", "'-x' is not a valid tag (letters, digits, '_', '.', '-'; at most 128 characters; not "
                        "starting with '.' or '-')."),
        ("team app", "An image address cannot contain spaces."),
        ("team/", "The repository path has an empty component (two slashes in a row or a trailing slash)."),
    ],
)
def test_parse_on_host_says_plainly_what_is_wrong(text, message):
    with pytest.raises(InvalidReference) as raised:
        parse_on_host(text, "reg.local:5000")
    assert str(raised.value) == message
