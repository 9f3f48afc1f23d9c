"""Forms of the rules app; field validation lives on the model (rules/validators.py)."""

import json

from django import forms
from django.urls import reverse

from core.forms import preselect_single_choice
from registries.models import Instance
from rules.models import Rule

PATTERN_FIELDS = ("repository_pattern", "tag_pattern")


class PathListField(forms.CharField):
    """A list of paths edited as text, one per line."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [line.strip() for line in super().to_python(value).splitlines() if line.strip()]


class RuleForm(forms.ModelForm):
    """Create or edit a rule. The instance is chosen on creation only; it cannot move later."""

    live_check_fields = PATTERN_FIELDS  # checked as the user types (console/_form_fields.html)
    prioritized_files = PathListField(
        required=False, label="Prioritized files",
        help_text=Rule._meta.get_field("prioritized_files").help_text,
    )

    class Meta:
        model = Rule
        fields = [
            "instance", "name", "description", "namespace", "repository_pattern", "tag_pattern",
            "enabled", "format", "prioritized_files", "chunk_size", "compression",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "repository_pattern": forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
            "tag_pattern": forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
            "compression": forms.RadioSelect,
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance_field = self.fields["instance"]
        if self.instance.pk:
            instance_field.disabled = True
            instance_field.queryset = Instance.objects.filter(pk=self.instance.instance_id)
        else:
            # Instances with acceleration off stay choosable so the refusal is the model's clear message.
            instance_field.queryset = Instance.objects.order_by("-acceleration_enabled", "name")
            instance_field.label_from_instance = _instance_label
            instance_field.empty_label = "Choose an instance"
        for name in PATTERN_FIELDS:
            self.fields[name].widget.attrs.update({
                "hx-post": reverse("rules:check-pattern"),
                "hx-trigger": "input changed delay:300ms",
                "hx-vals": json.dumps({"field": name}),
                "hx-target": f"#check-{name}",
                "hx-swap": "innerHTML",
                "aria-describedby": f"check-{name} id_{name}_helptext",
            })
        preselect_single_choice(self)


def _instance_label(instance: Instance) -> str:
    return instance.name if instance.acceleration_enabled else f"{instance.name} (acceleration off)"


class AddressForm(forms.Form):
    """The validation box: an image address to check against a rule. Blank is refused by the
    parser, which says what to type (converter.reference.parse_on_host)."""

    address = forms.CharField(
        label="Image address", max_length=4096, required=False,
        widget=forms.TextInput(attrs={"placeholder": "team/app:1.0", "spellcheck": "false", "autocomplete": "off"}),
        help_text="namespace/repository:tag; the instance's host may be left out.",
    )
