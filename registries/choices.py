"""Choices of the registries app: where a push event came from, its outcome and the reason code.

Every push event is final when stored (the conversion job, not the event, carries progress), so
there is no TERMINAL set here; colour names map to the CSS classes `badge-<colour>`.
"""

from django.db import models


class PushSource(models.TextChoices):
    DISTRIBUTION = "distribution", "CNCF Distribution"
    HARBOR = "harbor", "Harbor"


class PushOutcome(models.TextChoices):
    CONVERSION_REQUESTED = "conversion_requested", "Conversion requested"
    SKIPPED = "skipped", "Skipped"


class PushReason(models.TextChoices):
    RULE_MATCHED = "rule_matched", "A rule matched"
    ACCELERATION_OFF = "acceleration_off", "Acceleration is off"
    NO_RULE_MATCHED = "no_rule_matched", "No enabled rule matched"
    ACCELERATED_TAG = "accelerated_tag", "Tag is itself accelerated"
    NOT_IMAGE_MANIFEST = "not_image_manifest", "Not an image manifest"
    ALREADY_SEEN = "already_seen", "Already seen"
    NO_TAG = "no_tag", "Pushed by digest, without a tag"
    INVALID_REFERENCE = "invalid_reference", "Not a valid image address"


COLOURS = {
    PushOutcome.CONVERSION_REQUESTED: "green",
    PushOutcome.SKIPPED: "grey",
    PushReason.RULE_MATCHED: "green",
    PushReason.ACCELERATION_OFF: "amber",
    PushReason.NO_RULE_MATCHED: "amber",
    PushReason.ACCELERATED_TAG: "grey",
    PushReason.NOT_IMAGE_MANIFEST: "grey",
    PushReason.ALREADY_SEEN: "grey",
    PushReason.NO_TAG: "grey",
    PushReason.INVALID_REFERENCE: "red",
}

# The acceleration pill on instance pages.
ACCELERATION_COLOURS = {True: "green", False: "grey"}
