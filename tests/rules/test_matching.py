"""Rule matching: full-match semantics, order, disabled rules, host checks and explanations."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from converter.reference import parse_reference
from rules.matching import CRITERIA, evaluate_rule, explain, match_image
from tests.rules.conftest import HOST


def ref(path: str):
    """An address on the test instance's host."""
    return parse_reference(f"{HOST}/{path}")


def test_matching_rule_passes_every_criterion(make_rule):
    rule = make_rule("prod", repository_pattern="app", tag_pattern=r"\d+\.\d+")
    evaluation = evaluate_rule(rule, ref("team/app:1.2"))
    assert evaluation.matched
    assert evaluation.first_failure is None
    assert [criterion.name for criterion in evaluation.criteria] == list(CRITERIA)
    assert all(criterion.passed for criterion in evaluation.criteria)


def test_patterns_match_the_whole_name(make_rule):
    rule = make_rule("prod", repository_pattern="app", tag_pattern=r"\d+\.\d+")
    assert not evaluate_rule(rule, ref("team/app2:1.2")).matched
    assert not evaluate_rule(rule, ref("team/myapp:1.2")).matched
    evaluation = evaluate_rule(rule, ref("team/app:1.2-rc1"))
    assert not evaluation.matched
    assert evaluation.first_failure.name == "tag"
    assert evaluation.first_failure.detail == r"tag '1.2-rc1' does not fully match '\d+\.\d+'"


def test_blank_patterns_match_everything(make_rule):
    rule = make_rule("all")
    for address in ("team/app:1", "team/deep/nested/repo:latest", "team/x"):
        evaluation = evaluate_rule(rule, ref(address))
        assert evaluation.matched, address
    assert "blank" in evaluate_rule(rule, ref("team/app:1")).criteria[2].detail


def test_repository_below_the_namespace_is_matched(make_rule):
    rule = make_rule("nested", repository_pattern="tools/.*")
    assert evaluate_rule(rule, ref("team/tools/build:1")).matched
    assert not evaluate_rule(rule, ref("team/build:1")).matched


def test_namespace_must_be_equal(make_rule):
    rule = make_rule("team-only")
    evaluation = evaluate_rule(rule, ref("other/app:1"))
    assert evaluation.first_failure.name == "namespace"
    assert "'other' is not the rule's namespace 'team'" in evaluation.first_failure.detail


def test_host_mismatch_fails_the_instance_host_criterion(make_rule):
    rule = make_rule("any")
    evaluation = evaluate_rule(rule, parse_reference("elsewhere.example.com/team/app:1"))
    assert not evaluation.matched
    assert evaluation.first_failure.name == "instance host"
    assert HOST in evaluation.first_failure.detail
    # The port is part of the host.
    assert not evaluate_rule(rule, parse_reference("registry.example.com/team/app:1")).matched
    # Host comparison ignores case (the instance host and parsed addresses are lower-cased).
    assert evaluate_rule(rule, parse_reference("REGISTRY.example.com:5000/team/app:1")).matched


def test_digest_only_address(make_rule):
    digest = "sha256:" + "a" * 64
    assert evaluate_rule(make_rule("all"), ref(f"team/app@{digest}")).matched
    evaluation = evaluate_rule(make_rule("tagged", tag_pattern="v.*"), ref(f"team/app@{digest}"))
    assert evaluation.first_failure.name == "tag"
    assert "no tag" in evaluation.first_failure.detail


def test_untagged_address_means_latest(make_rule):
    assert evaluate_rule(make_rule("latest", tag_pattern="latest"), ref("team/app")).matched


def test_disabled_rules_never_match(make_rule, instance):
    make_rule("off", enabled=False)
    outcome = match_image(instance, ref("team/app:1"))
    assert outcome.rule is None
    assert outcome.closest.rule.name == "off"
    assert outcome.closest.first_failure.name == "enabled"
    assert outcome.closest.first_failure.detail == "rule 'off' is disabled"


def test_acceleration_off_fails_the_enabled_criterion(make_rule, instance):
    rule = make_rule("prod")
    instance.acceleration_enabled = False
    instance.save()
    rule.refresh_from_db()
    evaluation = evaluate_rule(rule, ref("team/app:1"))
    assert not evaluation.matched
    assert "acceleration is off" in evaluation.first_failure.detail


def test_first_enabled_matching_rule_wins(make_rule, instance):
    make_rule("disabled-first", enabled=False)
    make_rule("narrow", repository_pattern="other")
    make_rule("broad")
    make_rule("also-broad")
    outcome = match_image(instance, ref("team/app:1"))
    assert outcome.rule.name == "broad"
    assert outcome.closest is None
    assert [evaluation.rule.name for evaluation in outcome.evaluations] == [
        "disabled-first", "narrow", "broad", "also-broad",
    ]
    assert explain(outcome) == "matched rule 'broad'"


def test_order_follows_position_not_creation(make_rule, instance):
    first = make_rule("first")
    second = make_rule("second")
    first.position, second.position = 2, 1
    first.save()
    second.save()
    assert match_image(instance, ref("team/app:1")).rule.name == "second"


def test_closest_rule_is_the_one_passing_most_criteria(make_rule, instance):
    make_rule("other-namespace", namespace="ops", tag_pattern="x")  # fails namespace and tag
    make_rule("prod-only", repository_pattern="app", tag_pattern=r"\d+\.\d+")  # fails tag only
    make_rule("wrong-repo", repository_pattern="api", tag_pattern="nope")  # fails repository and tag
    outcome = match_image(instance, ref("team/app:1.0-rc1"))
    assert outcome.rule is None
    assert outcome.closest.rule.name == "prod-only"
    assert explain(outcome) == (
        "no enabled rule matched; closest rule 'prod-only' failed on tag: "
        r"tag '1.0-rc1' does not fully match '\d+\.\d+'"
    )


def test_closest_rule_ties_go_to_rule_order(make_rule, instance):
    make_rule("a", tag_pattern="x")
    make_rule("b", tag_pattern="y")
    assert match_image(instance, ref("team/app:1")).closest.rule.name == "a"


def test_no_rules(instance):
    outcome = match_image(instance, ref("team/app:1"))
    assert outcome.rule is None and outcome.closest is None and outcome.evaluations == ()
    assert explain(outcome) == "the instance has no rules"


def test_match_image_reads_rules_in_one_query_and_writes_nothing(make_rule, instance):
    for index in range(5):
        make_rule(f"r{index}", repository_pattern=f"app{index}")
    with CaptureQueriesContext(connection) as queries:
        outcome = match_image(instance, ref("team/app4:1"))
    assert outcome.rule.name == "r4"
    assert len(queries) == 1
    assert queries[0]["sql"].lstrip().upper().startswith("SELECT")


def test_rules_of_other_instances_are_ignored(make_rule, instance):
    from registries.models import Instance

    other = Instance.objects.create(name="other", url=f"http://{HOST}", acceleration_enabled=True)
    make_rule("elsewhere", instance=other)
    assert match_image(instance, ref("team/app:1")).rule is None


def test_pathological_patterns_match_in_linear_time(make_rule, instance):
    make_rule("evil", repository_pattern="(a+)+$", tag_pattern="(x+x+)+y")
    outcome = match_image(instance, ref("team/" + "a" * 200 + "b:" + "x" * 120))
    assert outcome.rule is None
    assert outcome.closest.first_failure.name == "repository"


def test_the_intake_verdict_is_match_images_verdict(instance, make_rule):
    """match_verdict (the webhook intake's) names the same rule, or the same closest rule with the
    same first failure, as match_image, over rules that fail on every criterion in turn."""
    from rules.matching import match_verdict, rules_in_order

    make_rule("other namespace", namespace="ops", repository_pattern="app")
    make_rule("disabled", repository_pattern="app", tag_pattern=r"\d+\.\d+", enabled=False)
    make_rule("tags only", repository_pattern="app", tag_pattern=r"\d+\.\d+")
    make_rule("any web", repository_pattern="web-[a-z]+")
    make_rule("blank", namespace="edge")
    addresses = [ref("team/app:1.2"), ref("team/app:latest"), ref("team/app"), ref("team/web-x:v1"),
                 ref("edge/anything:1"), ref("team/none:1"), ref("ops/app:x"), ref(f"team/app@sha256:{'a' * 64}"),
                 parse_reference("elsewhere.example/team/app:1.2")]
    for acceleration in (True, False):
        instance.acceleration_enabled = acceleration
        rules = rules_in_order(instance)
        for address in addresses:
            full, fast = match_image(instance, address, rules), match_verdict(instance, address, rules)
            assert fast.rule == full.rule, address
            assert (fast.closest and fast.closest.criteria) == (full.closest and full.closest.criteria), address
    assert match_verdict(instance, ref("team/app:1.2"), []).closest is None


def test_rules_in_order_reads_each_rule_as_the_orm_does(instance, make_rule):
    from rules.matching import rules_in_order
    from rules.models import Rule

    make_rule("second", position=2, prioritized_files=["bin/app", "etc/app.conf"], enabled=False)
    make_rule("first", position=1, tag_pattern=r"v\d+")
    read = rules_in_order(instance)
    assert [rule.name for rule in read] == ["first", "second"]
    for rule in read:
        stored = Rule.objects.get(pk=rule.pk)
        assert {f.attname: getattr(rule, f.attname) for f in Rule._meta.concrete_fields} == \
               {f.attname: getattr(stored, f.attname) for f in Rule._meta.concrete_fields}
        assert rule.instance is instance and not rule._state.adding
    assert read[1].prioritized_files == ["bin/app", "etc/app.conf"]
