"""Filters of the audit log, shared by the page and the API so both accept the same parameters,
and the date-range filter other apps' lists use."""

import django_filters
from django import forms

from core.models import AuditEntry


def day_filter(field_name: str, bound: str, label: str) -> django_filters.DateFilter:
    """A date picker that bounds a datetime field by day: `bound` is "gte" (from) or "lte" (to)."""
    return django_filters.DateFilter(field_name=field_name, lookup_expr=f"date__{bound}", label=label,
                                     widget=forms.DateInput(attrs={"type": "date"}))


class AuditEntryFilter(django_filters.FilterSet):
    """actor, source, action, object_type (`app_label.model`), object_id, date_from/date_to, q, sort."""

    actor = django_filters.CharFilter(field_name="actor_name", lookup_expr="iexact", label="Actor")
    source = django_filters.ChoiceFilter(choices=AuditEntry.SOURCES, label="Source", empty_label="Any source")
    action = django_filters.ChoiceFilter(choices=AuditEntry.ACTIONS, label="Action", empty_label="Any action")
    object_type = django_filters.CharFilter(method="filter_object_type", label="Object type")
    object_id = django_filters.CharFilter(field_name="object_id", label="Object id")
    date_from = day_filter("timestamp", "gte", "From")
    date_to = day_filter("timestamp", "lte", "To")
    q = django_filters.CharFilter(field_name="object_repr", lookup_expr="icontains", label="Object name")
    sort = django_filters.OrderingFilter(fields=(("timestamp", "timestamp"),), label="Sort")

    class Meta:
        model = AuditEntry
        fields: list = []

    def filter_object_type(self, queryset, name, value):
        app_label, _, model = value.strip().lower().partition(".")
        if not model:
            return queryset.filter(model=app_label)
        return queryset.filter(app_label=app_label, model=model)
