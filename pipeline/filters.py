"""Push event filters, shared by the Events page and `/api/v1/events/` so both filter alike."""

import django_filters
from django import forms
from django.db.models import Q

from core.filters import day_filter
from pipeline.choices import PushOutcome, PushReason, PushSource
from pipeline.models import PushEvent
from registries.models import Instance


class PushEventFilter(django_filters.FilterSet):
    instance = django_filters.ModelChoiceFilter(queryset=Instance.objects.all(), empty_label="All instances")
    outcome = django_filters.ChoiceFilter(choices=PushOutcome.choices, empty_label="Any outcome")
    reason = django_filters.ChoiceFilter(choices=PushReason.choices, empty_label="Any reason")
    source = django_filters.ChoiceFilter(choices=PushSource.choices, empty_label="Any registry type")
    q = django_filters.CharFilter(
        method="search", label="Search",
        widget=forms.TextInput(attrs={"placeholder": "namespace, repository, tag or digest", "type": "search"}),
    )
    namespace = django_filters.CharFilter(lookup_expr="exact")
    repository = django_filters.CharFilter(lookup_expr="icontains")
    digest = django_filters.CharFilter(lookup_expr="exact")
    received_after = day_filter("received_at", "gte", "From")
    received_before = day_filter("received_at", "lte", "To")

    class Meta:
        model = PushEvent
        fields = ["instance", "outcome", "reason", "source", "q", "namespace", "repository", "digest"]

    def search(self, queryset, name, value):
        """Words are ANDed; each may match the namespace, repository, tag or digest."""
        for word in value.split()[:10]:
            path_namespace, slash, path_repository = word.partition("/")
            condition = (
                Q(namespace__icontains=word) | Q(repository__icontains=word) | Q(tag__icontains=word)
                | Q(digest__icontains=word)
            )
            if slash:
                condition |= Q(namespace__iexact=path_namespace, repository__istartswith=path_repository)
            queryset = queryset.filter(condition)
        return queryset
