"""What every form of the console shares.

`preselect_single_choice(form)`: a select with one possible choice shows that choice, chosen,
instead of "---------" (or "Choose an instance") above it. Forms call it at the end of __init__.
"""

from django import forms


def preselect_single_choice(form: forms.BaseForm) -> None:
    """For each model choice field of an unbound form whose queryset holds exactly one row: drop
    the empty choice and make that row the initial value (unless an initial value is set already)."""
    for name, field in form.fields.items():
        if not isinstance(field, forms.ModelChoiceField) or isinstance(field, forms.ModelMultipleChoiceField):
            continue
        if field.disabled:
            continue
        only = list(field.queryset[:2])
        if len(only) != 1:
            continue
        field.empty_label = None
        if not form.is_bound and form.initial.get(name) in (None, ""):
            form.initial[name] = only[0].pk
