"""Push intake: webhook payloads → normalized push records (pure: no database, no network).

Each registry format is one module here with `recognizes(payload)` and `parse(payload)`; a new
format is one new module added to FORMATS. Today: CNCF Distribution notifications and Harbor
webhooks (default and CloudEvents formats), and the console's own test deliveries.
"""

import json

from pipeline.intake import distribution, harbor, test_event
from pipeline.intake.records import MalformedPayload, ParsedPayload, PushRecord, is_image_manifest, is_signature_tag

__all__ = ["FORMATS", "MalformedPayload", "ParsedPayload", "PushRecord", "is_image_manifest", "is_signature_tag",
           "parse_payload"]

FORMATS = (distribution, harbor, test_event)


def parse_payload(body: bytes) -> ParsedPayload:
    """Parse a webhook body; raises MalformedPayload for anything that is not a payload we know."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, absurd numbers, deep nesting
        raise MalformedPayload(f"The body is not valid JSON ({type(error).__name__}).") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("The body must be a JSON object.")
    for payload_format in FORMATS:
        if payload_format.recognizes(payload):
            return payload_format.parse(payload)
    raise MalformedPayload(
        "Not a CNCF Distribution notification (no 'events' list) nor a Harbor webhook (no 'type')."
    )
