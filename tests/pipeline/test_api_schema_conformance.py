"""The API answers what its OpenAPI schema says: real responses of /api/v1/events/ (and the webhook
health of an instance) validated against the schema the console generates, with events of every
kind: matched (with a job), not matched (no rule: nulls), a test event, and a job that failed."""

import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker

from core.roles import Role
from pipeline.actions import record_push
from pipeline.choices import JobStatus
from pipeline.intake import PushRecord
from pipeline.models import ConversionJob
from registries.models import Instance
from rules.models import Rule

pytestmark = pytest.mark.django_db

OCI = "application/vnd.oci.image.manifest.v1+json"


def push(delivery_id: str, repository: str, tag: str, source: str = "distribution") -> PushRecord:
    return PushRecord(source=source, delivery_id=delivery_id, namespace="team", repository=repository, tag=tag,
                      digest="sha256:" + f"{abs(hash(delivery_id)):064d}"[-64:], media_type=OCI, actor="ci")


@pytest.fixture
def events(db):
    instance = Instance.objects.create(name="schema", url="http://registry.example:5000", acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="web", namespace="team", repository_pattern="web")
    matched = record_push(instance, push("d1", "web", "1.0"))
    record_push(instance, push("d2", "api", "1.0"))  # no rule matched: matched_rule and job are null
    record_push(instance, PushRecord(source="test", delivery_id="test-1", namespace="", repository="webhook-test-event",
                                     tag="", digest="", media_type="", actor="olga"))
    ConversionJob.objects.filter(pk=matched.job_id).update(status=JobStatus.FAILED, reason="It broke.")
    return instance


@pytest.fixture
def validator(api_as):
    """validate(response_json, path, method, status): against the console's own generated schema."""
    viewer = api_as(Role.VIEWER)
    spec = viewer.get("/api/v1/schema/?format=json").json()

    def validate(body, path: str, method: str = "get", status: str = "200") -> None:
        content = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        schema = {"allOf": [content], "components": spec["components"]}
        OAS30ReadValidator(schema, format_checker=oas30_format_checker).validate(body)

    return viewer, validate


def test_event_list_and_detail_conform_to_the_schema(events, validator):
    viewer, validate = validator
    listed = viewer.get("/api/v1/events/").json()
    assert len(listed["results"]) == 3
    assert {event["matched_rule_name"] for event in listed["results"]} == {"web", None}
    assert {event["job_status"] for event in listed["results"]} == {"failed", None}
    validate(listed, "/api/v1/events/")
    for event in listed["results"]:
        validate(viewer.get(f"/api/v1/events/{event['id']}/").json(), "/api/v1/events/{id}/")


def test_a_schema_violation_is_caught(events, validator):
    """The check can fail: a null where the schema wants a string is refused."""
    viewer, validate = validator
    listed = viewer.get("/api/v1/events/").json()
    listed["results"][0]["instance_name"] = None
    with pytest.raises(ValidationError, match="None for not nullable"):
        validate(listed, "/api/v1/events/")


def test_webhook_health_conforms_to_the_schema(events, validator, client):
    viewer, validate = validator
    client.post(f"/webhooks/registry/{events.pk}/", data=b"{}", content_type="application/json",
                HTTP_AUTHORIZATION="wrong")
    for instance in (events, Instance.objects.create(name="quiet", url="http://quiet.example")):
        body = viewer.get(f"/api/v1/instances/{instance.pk}/webhook-health/").json()
        validate(body, "/api/v1/instances/{instance_pk}/webhook-health/")
