"""Domain verbs of the rules app: rules and the validation box. UI views, the API and the admin go through these."""


from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from converter.reference import ImageReference, parse_on_host
from rules.matching import RuleEvaluation, evaluate_rule
from rules.models import Rule
from rules.validators import compile_uncached

UP, DOWN = "up", "down"


def save_rule(rule: Rule) -> Rule:
    """Create or update a rule after validating it as a whole.

    New rules need acceleration on for their instance and go last in its order. A name taken by a
    concurrent request surfaces as a ValidationError at the name, never as a database error.
    """
    rule.full_clean()
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise ValidationError({"name": f"A rule named '{rule.name}' already exists for this instance."}) from None
    return rule


def set_rule_enabled(rule: Rule, enabled: bool) -> Rule:
    """Switch a rule on or off; a disabled rule never matches, and nothing else changes."""
    if rule.enabled != enabled:
        rule.enabled = enabled
        rule.save(update_fields=["enabled", "updated_at"])
    return rule


@transaction.atomic
def move_rule(rule: Rule, direction: str) -> Rule:
    """Move a rule one place up or down in its instance's order (positions are renumbered 1..n)."""
    if direction not in (UP, DOWN):
        raise ValidationError(f"Move a rule '{UP}' or '{DOWN}', not '{direction}'.")
    siblings = list(Rule.objects.select_for_update().filter(instance_id=rule.instance_id).order_by("position", "id"))
    index = next(i for i, sibling in enumerate(siblings) if sibling.pk == rule.pk)
    target = index - 1 if direction == UP else index + 1
    if 0 <= target < len(siblings):
        siblings[index], siblings[target] = siblings[target], siblings[index]
    for position, sibling in enumerate(siblings, start=1):
        if sibling.position != position:
            sibling.position = position
            sibling.save(update_fields=["position"])
        if sibling.pk == rule.pk:
            rule.position = position
    return rule


def delete_rule(rule: Rule) -> None:
    """Delete a rule; images already accelerated under it stay in the registry."""
    rule.delete()


def validate_address(rule: Rule, address: str) -> tuple[ImageReference, RuleEvaluation]:
    """Check an image address against one rule, saved or not (the rule form tests the patterns being
    typed). `team/app:1.0` means an image on the rule's instance. Raises InvalidReference if the address
    does not parse, PatternError if a pattern of an unsaved rule does not compile."""
    reference = parse_on_host(address, rule.instance.host)
    for pattern in (rule.repository_pattern, rule.tag_pattern):
        if pattern:
            compile_uncached(pattern)  # a draft's pattern may not compile: say so before matching
    return reference, evaluate_rule(rule, reference)

