"""Fixtures of the pipeline tests: a real registry as an instance with acceleration on, and image pushes."""

import itertools

import pytest

from registries.models import Instance
from rules.models import Rule
from tests.support.counting_proxy import counting_proxy  # noqa: F401 (a fixture)
from tests.support.images import Platform, push_image

_counter = itertools.count()


@pytest.fixture
def reg(registry):
    return registry


@pytest.fixture
def instance(db, reg) -> Instance:
    return Instance.objects.create(name="local", url=reg.url, acceleration_enabled=True)


@pytest.fixture
def make_rule(instance):
    def factory(name: str = "team", **fields) -> Rule:
        fields.setdefault("namespace", "team")
        return Rule.objects.create(instance=instance, name=name, **fields)

    return factory


@pytest.fixture
def push(tmp_path, reg):
    """push("team/app:1.0", seed=0) → digest of a small image (content varies with the seed)."""

    def send(path_and_tag: str, seed: int | None = None, host: str | None = None) -> str:
        seed = next(_counter) if seed is None else seed
        layers = [{"etc/": None, "etc/seed": f"{seed}\n".encode()}, {"app/": None, "app/run": b"#!/bin/sh\n" * 100}]
        directory = tmp_path / f"push-{next(_counter)}"
        return push_image(directory, f"{host or reg.host}/{path_and_tag}", [Platform(layers=layers)])

    return send
