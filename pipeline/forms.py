"""Forms of the pipeline: "Convert now"."""

from django import forms

from core.forms import preselect_single_choice
from registries.models import Instance


class ConvertNowForm(forms.Form):
    """"Convert now": any tag of an instance, given as namespace/repository:tag or a full address."""

    instance = forms.ModelChoiceField(queryset=Instance.objects.all())
    image = forms.CharField(
        max_length=4096, label="Image",
        widget=forms.TextInput(attrs={"placeholder": "team/app:1.0", "spellcheck": "false"}),
        help_text="namespace/repository:tag on the instance (or the full address). Works without a rule.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        preselect_single_choice(self)
