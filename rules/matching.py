"""Rule matching: does an image address fall under an instance's acceleration rules, and why (not).

Pure functions: they read the rules (one query, in rule order) and never write. Every verdict
comes with a per-criterion breakdown in plain sentences, so the validation box and the push
events can explain exactly which part of a rule an image failed.
"""

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection

from converter.reference import ImageReference
from rules.models import Rule
from rules.validators import full_match

if TYPE_CHECKING:
    from registries.models import Instance

HOST, NAMESPACE, REPOSITORY, TAG, ENABLED = "instance host", "namespace", "repository", "tag", "enabled"
CRITERIA = (HOST, NAMESPACE, REPOSITORY, TAG, ENABLED)


@dataclass(frozen=True)
class Criterion:
    name: str  # one of CRITERIA
    passed: bool
    detail: str  # a sentence a person can act on


@dataclass(frozen=True)
class RuleEvaluation:
    rule: Rule
    criteria: tuple[Criterion, ...]

    @property
    def matched(self) -> bool:
        return all(criterion.passed for criterion in self.criteria)

    @property
    def first_failure(self) -> Criterion | None:
        return next((criterion for criterion in self.criteria if not criterion.passed), None)

    @property
    def passed_count(self) -> int:
        return sum(criterion.passed for criterion in self.criteria)


@dataclass(frozen=True)
class MatchOutcome:
    rule: "Rule | None"  # the first enabled rule that matched, in rule order
    evaluations: tuple[RuleEvaluation, ...]
    closest: RuleEvaluation | None  # when nothing matched: the rule that passed the most criteria

    @property
    def matched(self) -> bool:
        return self.rule is not None


def _pattern(name: str, pattern: str, value: str, passed: bool) -> Criterion:
    if not pattern:
        return Criterion(name, True, f"any {name} matches (the pattern is blank); '{value}' included")
    if passed:
        return Criterion(name, True, f"{name} '{value}' fully matches '{pattern}'")
    return Criterion(name, False, f"{name} '{value}' does not fully match '{pattern}'")


def _tag(rule: Rule, reference: ImageReference, passed: bool) -> Criterion:
    if reference.tag is None and reference.digest is not None:
        if passed:
            return Criterion(TAG, True, "any tag matches (the pattern is blank), including a digest-only address")
        return Criterion(
            TAG, False, f"the address has a digest but no tag, so the tag pattern '{rule.tag_pattern}' cannot match",
        )
    return _pattern(TAG, rule.tag_pattern, reference.tag or "latest", passed)


def _passes(rule: Rule, reference: ImageReference, host: str) -> tuple[bool, ...]:
    """Which criteria the address passes, in CRITERIA order: the one place a verdict is decided
    (evaluate_rule words it; match_verdict uses it bare)."""
    if reference.tag is None and reference.digest is not None:
        tag = not rule.tag_pattern
    else:
        tag = not rule.tag_pattern or full_match(rule.tag_pattern, reference.tag or "latest")
    return (reference.host == host, reference.namespace == rule.namespace,
            not rule.repository_pattern or full_match(rule.repository_pattern, reference.repository), tag,
            rule.enabled and rule.instance.acceleration_enabled)


def evaluate_rule(rule: Rule, reference: ImageReference) -> RuleEvaluation:
    """Check one rule against an image address, criterion by criterion (none short-circuits)."""
    instance = rule.instance
    host_passed, namespace_passed, repository_passed, tag_passed, enabled_passed = _passes(
        rule, reference, instance.host)
    if host_passed:
        host = Criterion(HOST, True, f"host '{reference.host}' is the host of instance '{instance.name}'")
    else:
        host = Criterion(
            HOST, False, f"host '{reference.host}' is not '{instance.host}', the host of instance '{instance.name}'",
        )
    if namespace_passed:
        namespace = Criterion(NAMESPACE, True, f"namespace '{reference.namespace}' is the rule's namespace")
    else:
        namespace = Criterion(
            NAMESPACE, False, f"namespace '{reference.namespace}' is not the rule's namespace '{rule.namespace}'",
        )
    if enabled_passed:
        enabled = Criterion(ENABLED, True, f"rule '{rule.name}' is enabled")
    elif not rule.enabled:
        enabled = Criterion(ENABLED, False, f"rule '{rule.name}' is disabled")
    else:
        enabled = Criterion(
            ENABLED, False, f"rule '{rule.name}' is enabled, but acceleration is off for instance '{instance.name}'",
        )
    return RuleEvaluation(
        rule=rule,
        criteria=(host, namespace, _pattern(REPOSITORY, rule.repository_pattern, reference.repository,
                                            repository_passed), _tag(rule, reference, tag_passed), enabled),
    )


def rules_in_order(instance: "Instance") -> list[Rule]:
    """The instance's rules in matching order, for match_image: one plain statement (the webhook
    intake reads them for every delivery), each rule pointing at `instance` as given."""
    columns, converters = _rule_columns()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {Rule._meta.db_table} WHERE instance_id = %s "  # noqa: S608
                       "ORDER BY position, id", [instance.pk])
        rows = cursor.fetchall()
    rules = []
    for row in rows:
        values = list(row)
        for index, convert in converters:
            values[index] = convert(values[index], None, connection)
        rule = Rule.from_db(connection.alias, None, values)
        rule.instance = instance
        rules.append(rule)
    return rules


@functools.cache
def _rule_columns() -> tuple[str, list]:
    """Every column of a rule, in field order, and the fields' own conversions of what the database
    returns (the JSON list), for rules_in_order: what a queryset does, without its cost per call."""
    fields = Rule._meta.concrete_fields
    return (", ".join(field.column for field in fields),
            [(index, field.from_db_value) for index, field in enumerate(fields) if hasattr(field, "from_db_value")])


def match_image(instance: "Instance", reference: ImageReference, rules: list[Rule] | None = None) -> MatchOutcome:
    """Evaluate every rule of the instance in order; the first full match wins. `rules` is
    rules_in_order(instance) when the caller matches many images at once (read once, not per image)."""
    if rules is None:
        rules = rules_in_order(instance)
    evaluations = tuple(evaluate_rule(rule, reference) for rule in rules)
    winner = next((evaluation for evaluation in evaluations if evaluation.matched), None)
    if winner is not None:
        return MatchOutcome(rule=winner.rule, evaluations=evaluations, closest=None)
    closest = None
    for evaluation in evaluations:  # strict '>' keeps the earliest rule on ties
        if closest is None or evaluation.passed_count > closest.passed_count:
            closest = evaluation
    return MatchOutcome(rule=None, evaluations=evaluations, closest=closest)


def match_verdict(instance: "Instance", reference: ImageReference, rules: list[Rule]) -> MatchOutcome:
    """match_image's verdict (the same rule, or the same closest rule with the same sentences) at
    the cost of the webhook intake, which needs no more: each rule is checked without its sentences
    until one matches, and only the closest is evaluated in full. `evaluations` holds just that one."""
    host = instance.host
    closest, most = None, -1
    for rule in rules:
        passed = _passes(rule, reference, host)
        if all(passed):
            return MatchOutcome(rule=rule, evaluations=(), closest=None)
        if sum(passed) > most:  # strict '>' keeps the earliest rule on ties, as match_image does
            closest, most = rule, sum(passed)
    if closest is None:
        return MatchOutcome(rule=None, evaluations=(), closest=None)
    evaluation = evaluate_rule(closest, reference)
    return MatchOutcome(rule=None, evaluations=(evaluation,), closest=evaluation)



def explain(outcome: MatchOutcome) -> str:
    """One sentence for a push event: which rule matched, or the closest rule and what it failed on."""
    if outcome.rule is not None:
        return f"matched rule '{outcome.rule.name}'"
    if outcome.closest is None:
        return "the instance has no rules"
    failure = outcome.closest.first_failure
    name = outcome.closest.rule.name
    return f"no enabled rule matched; closest rule '{name}' failed on {failure.name}: {failure.detail}"
