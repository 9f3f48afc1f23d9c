"""The reconciler: find tags that should have an accelerated twin but have neither twin nor job.

It walks the registry's catalog and tag lists (paginated by the converter's client), keeps the
repositories of the namespaces the rules name, and checks each tag against the rules in order,
exactly as a push would be. What it finds is then requested for conversion by
`rules.actions.reconcile_instance` (periodic, from Celery beat) or `rules.actions.backfill_rule`
("Convert existing images" on a rule page). A webhook that was lost costs a delay, not an image.
"""

from dataclasses import dataclass, field

from django.conf import settings

from converter.reference import ImageReference
from converter.registry import RegistryClient, RegistryNotFound
from rules.matching import evaluate_rule
from rules.models import ConversionJob, Rule


@dataclass(frozen=True)
class Candidate:
    reference: ImageReference  # host/namespace/repository:tag
    rule: Rule  # the first enabled matching rule: it decides the options


@dataclass
class Scan:
    """What one walk found: candidates, and how much was looked at."""

    candidates: list[Candidate] = field(default_factory=list)
    repositories: int = 0
    tags: int = 0
    with_twin: int = 0
    with_job: int = 0
    errors: list[str] = field(default_factory=list)


def _winner(rules: list[Rule], reference: ImageReference) -> Rule | None:
    return next((rule for rule in rules if evaluate_rule(rule, reference).matched), None)


def scan(instance, client: RegistryClient, only_rule: Rule | None = None) -> Scan:
    """Walk the instance's registry for tags without twin or job that an enabled rule matches.

    With `only_rule`, keep the tags that rule matches (they are still converted with the options of
    the first matching rule, as a push would be).
    """
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    rules = list(instance.rules.filter(enabled=True).order_by("position", "id"))
    result = Scan()
    if not instance.acceleration_enabled or not rules:
        return result
    namespaces = {rule.namespace for rule in rules}
    for path in client.catalog():
        namespace, slash, repository = path.partition("/")
        if not slash or namespace not in namespaces:
            continue
        try:
            tags = client.tags(path)
        except RegistryNotFound:  # deleted between the catalog and now
            continue
        result.repositories += 1
        present = set(tags)
        jobs = set()  # tags that have a job: its source tag and its twin tags (same content)
        for source_tag, twin_tags in ConversionJob.objects.filter(
            instance=instance, namespace=namespace, repository=repository,
        ).values_list("source_tag", "twin_tags"):
            jobs.update((source_tag, *twin_tags))
        for tag in tags:
            if tag.endswith(suffix):
                continue
            result.tags += 1
            reference = ImageReference(instance.host, namespace, repository, tag=tag)
            if only_rule is not None and not evaluate_rule(only_rule, reference).matched:
                continue
            rule = _winner(rules, reference)
            if rule is None:
                continue
            if tag + suffix in present:
                result.with_twin += 1
            elif tag in jobs:
                result.with_job += 1
            else:
                result.candidates.append(Candidate(reference, rule))
    return result
