"""Test deliveries: what the console's own *Send test event* posts (pipeline.deliveries).

`{"apparate_test_event": {"id": "<unique id>", "sent_by": "<user name>"}}`. It becomes one record
marked as a test (source "test"), stored as a test event and never converted. Only a sender that
knows the instance's webhook secret gets this far, as with any other format.
"""

from pipeline.choices import PushSource
from pipeline.intake.records import ParsedPayload, PushRecord, object_field, text_field
from pipeline.models import MAX_ACTOR_LENGTH, MAX_DELIVERY_ID_LENGTH

KEY = "apparate_test_event"
# The repository a test event names: an address no registry can hold (it has no namespace).
TEST_REPOSITORY = "webhook-test-event"


def recognizes(payload: dict) -> bool:
    return KEY in payload


def parse(payload: dict) -> ParsedPayload:
    body = object_field(payload, KEY, "body")
    return ParsedPayload(PushSource.TEST, (PushRecord(
        source=PushSource.TEST,
        delivery_id=text_field(body, "id", KEY, MAX_DELIVERY_ID_LENGTH, required=True),
        namespace="", repository=TEST_REPOSITORY, tag="", digest="", media_type="",
        actor=text_field(body, "sent_by", KEY, MAX_ACTOR_LENGTH),
    ),), 0)
