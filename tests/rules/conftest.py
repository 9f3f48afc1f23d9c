"""Fixtures of the rules tests: an instance with acceleration on and a rule factory."""

import pytest

from registries.models import Instance
from rules.models import Rule

HOST = "registry.example.com:5000"


@pytest.fixture
def instance(db):
    return Instance.objects.create(name="main", url=f"http://{HOST}", acceleration_enabled=True)


@pytest.fixture
def make_rule(instance):
    """make_rule(name, **fields) → a saved rule of `instance` (namespace 'team' unless given)."""

    def factory(name: str = "rule", **fields) -> Rule:
        fields.setdefault("instance", instance)
        fields.setdefault("namespace", "team")
        return Rule.objects.create(name=name, **fields)

    return factory
