"""Forms of the registries app; field validation lives on the model (registries/validators.py).

The password is write-only: it is never put back into the page. On edit a blank password keeps
the stored one and "Clear password" removes it; when the URL moves to another host, the stored one
is not kept: the form asks for it again. The webhook secret is not a form field at all
(it is generated, and replaced with "Rotate secret").
"""

from django import forms
from django.core.exceptions import ValidationError

from registries.models import Instance
from registries.validators import validate_credentials, validate_password_follows_url


class InstanceForm(forms.ModelForm):
    """Register or edit a registry instance (also used by Django admin)."""

    password = forms.CharField(
        label="Password or token", required=False, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_password = forms.BooleanField(
        label="Clear the stored password", required=False,
        help_text="Remove the stored password or token (e.g. to switch to anonymous access).",
    )

    class Meta:
        model = Instance
        fields = ["name", "url", "description", "username", "password", "verify_tls", "ca_bundle"]
        widgets = {
            "url": forms.URLInput(attrs={"placeholder": "https://registry.example.com", "spellcheck": "false"}),
            "description": forms.Textarea(attrs={"rows": 2}),
            "username": forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
            "ca_bundle": forms.Textarea(
                attrs={"rows": 4, "spellcheck": "false", "placeholder": "-----BEGIN CERTIFICATE-----"}
            ),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.had_password = bool(self.instance.pk and self.instance.password)
        self.fields["password"].initial = ""
        if self.had_password:
            self.fields["password"].help_text = "A password is stored. Leave blank to keep it."
        else:
            self.fields["password"].help_text = "Leave username and password blank for anonymous access."
            del self.fields["clear_password"]

    def clean_password(self):
        # Blank means "keep" on edit; the model instance still holds the stored value.
        return self.cleaned_data["password"] or (self.instance.password if self.had_password else "")

    def clean(self):
        cleaned = super().clean()
        typed = self.data.get(self.add_prefix("password"))
        if cleaned.get("clear_password"):
            if typed:
                self.add_error("password", "Either type a new password or clear it, not both.")
                return cleaned
            cleaned["password"] = ""
        elif self.had_password and cleaned.get("url"):
            try:
                validate_password_follows_url(self.instance.url, cleaned["url"], True, bool(typed))
            except ValidationError as error:
                self.add_error(None, error)
                return cleaned
        if "username" in cleaned and "password" in cleaned:
            try:
                validate_credentials(cleaned["username"], cleaned["password"])
            except ValidationError as error:
                self.add_error(None, error)
        return cleaned


class ConfirmForm(forms.Form):
    """The explicit confirmation that dangerous or costly switches need (`confirm=true`)."""

    confirm = forms.BooleanField(
        required=True, error_messages={"required": "Tick the confirmation (confirm=true) to go ahead."}
    )
