"""The Rule model's whole-object rules and the domain verbs in rules/actions.py."""

import pytest
from django.core.exceptions import ValidationError

from converter.reference import InvalidReference
from registries.models import Instance
from rules import actions
from rules.choices import DEFAULT_CHUNK_SIZE, Compression, Format
from rules.models import Rule


def test_defaults(make_rule):
    rule = make_rule("defaults")
    assert rule.enabled
    assert rule.format == Format.ESTARGZ
    assert rule.compression == Compression.BEST
    assert rule.chunk_size == DEFAULT_CHUNK_SIZE == 4 * 1024 * 1024
    assert rule.prioritized_files == []
    assert rule.is_active


def test_save_rule_validates_and_puts_new_rules_last(instance, make_rule):
    make_rule("first")
    rule = actions.save_rule(Rule(instance=instance, name="second", namespace="team", tag_pattern=r"v\d+"))
    assert [r.name for r in instance.rules.order_by("position")] == ["first", "second"]
    assert rule.position == 2


def test_save_rule_refuses_bad_fields_and_saves_nothing(instance):
    rule = Rule(instance=instance, name="bad", namespace="team/x", repository_pattern="(unclosed",
                chunk_size=1024, prioritized_files=["/../etc"])
    with pytest.raises(ValidationError) as error:
        actions.save_rule(rule)
    assert set(error.value.message_dict) == {"namespace", "repository_pattern", "chunk_size", "prioritized_files"}
    assert error.value.message_dict["repository_pattern"] == ["Invalid RE2 pattern: missing ): (unclosed."]
    assert not Rule.objects.exists()


def test_chunk_size_bounds(instance):
    kib, mib = 1024, 1024 * 1024
    for size, ok in ((64 * kib, True), (64 * mib, True), (64 * kib - 1, False), (64 * mib + 1, False)):
        rule = Rule(instance=instance, name=f"c{size}", namespace="team", chunk_size=size)
        if ok:
            actions.save_rule(rule)
        else:
            with pytest.raises(ValidationError, match="chunk_size"):
                actions.save_rule(rule)


def test_prioritized_files_are_normalized_on_save(instance):
    rule = actions.save_rule(Rule(instance=instance, name="p", namespace="team",
                                  prioritized_files=["bin/sh", "./etc/x", "/bin/sh"]))
    rule.refresh_from_db()
    assert rule.prioritized_files == ["/bin/sh", "/etc/x"]


def test_name_is_unique_per_instance(instance, make_rule):
    make_rule("prod")
    with pytest.raises(ValidationError) as error:
        actions.save_rule(Rule(instance=instance, name="prod", namespace="other"))
    assert error.value.message_dict["name"] == ["A rule named 'prod' already exists for instance 'main'."]
    other = Instance.objects.create(name="second", url="https://other.example.com", acceleration_enabled=True)
    actions.save_rule(Rule(instance=other, name="prod", namespace="team"))
    assert Rule.objects.filter(name="prod").count() == 2


def test_rules_need_acceleration_on_to_be_created(instance):
    instance.acceleration_enabled = False
    instance.save()
    with pytest.raises(ValidationError) as error:
        actions.save_rule(Rule(instance=instance, name="prod", namespace="team"))
    assert "Acceleration is off for instance 'main'" in error.value.message_dict["instance"][0]
    assert not Rule.objects.exists()


def test_existing_rules_stay_and_stay_editable_when_acceleration_is_off(instance, make_rule):
    rule = make_rule("prod")
    instance.acceleration_enabled = False
    instance.save()
    rule.refresh_from_db()
    assert not rule.is_active
    rule.tag_pattern = "v.*"
    actions.save_rule(rule)
    actions.set_rule_enabled(rule, False)
    rule.refresh_from_db()
    assert rule.tag_pattern == "v.*" and not rule.enabled


def test_set_rule_enabled(make_rule):
    rule = make_rule("prod")
    actions.set_rule_enabled(rule, False)
    rule.refresh_from_db()
    assert not rule.enabled
    actions.set_rule_enabled(rule, True)
    rule.refresh_from_db()
    assert rule.enabled


def names(instance):
    return list(instance.rules.order_by("position", "id").values_list("name", flat=True))


def test_move_rule_up_and_down(instance, make_rule):
    a, b, c = make_rule("a"), make_rule("b"), make_rule("c")
    actions.move_rule(c, actions.UP)
    assert names(instance) == ["a", "c", "b"]
    assert c.position == 2
    actions.move_rule(a, actions.DOWN)
    assert names(instance) == ["c", "a", "b"]
    # At the ends, moving further changes nothing.
    actions.move_rule(Rule.objects.get(name="c"), actions.UP)
    actions.move_rule(b, actions.DOWN)
    assert names(instance) == ["c", "a", "b"]
    with pytest.raises(ValidationError):
        actions.move_rule(b, "sideways")


def test_move_rule_renumbers_ties(instance, make_rule):
    for name in "abc":
        rule = make_rule(name)
        Rule.objects.filter(pk=rule.pk).update(position=5)
    actions.move_rule(Rule.objects.get(name="c"), actions.UP)
    assert names(instance) == ["a", "c", "b"]
    assert sorted(instance.rules.values_list("position", flat=True)) == [1, 2, 3]


def test_move_rule_ignores_other_instances(instance, make_rule):
    other = Instance.objects.create(name="other", url="https://other.example.com", acceleration_enabled=True)
    make_rule("x", instance=other)
    make_rule("a")
    actions.move_rule(make_rule("b"), actions.UP)
    assert names(instance) == ["b", "a"]
    assert names(other) == ["x"]


def test_delete_rule(make_rule):
    actions.delete_rule(make_rule("gone"))
    assert not Rule.objects.exists()


def test_validate_address(make_rule):
    rule = make_rule("prod", repository_pattern="app")
    reference, evaluation = actions.validate_address(rule, "registry.example.com:5000/team/app:1")
    assert reference.repository == "app" and evaluation.matched
    with pytest.raises(InvalidReference, match="namespace and a repository"):
        actions.validate_address(rule, "registry.example.com:5000/app")
