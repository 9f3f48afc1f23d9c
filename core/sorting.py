"""Sorting of list pages by a `?sort=` parameter (`name`, `-name`), shared by the apps' views."""

from django.db.models import F


def sort_queryset(queryset, sort: str, sorts: dict[str, str], default: str, tiebreak: str = "pk"):
    """Order by the field that `sorts` maps the key to (unknown keys use `default`); empty values last."""
    field = sorts.get(sort.removeprefix("-")) or sorts[default]
    order = F(field).desc(nulls_last=True) if sort.startswith("-") else F(field).asc(nulls_last=True)
    return queryset.order_by(order, tiebreak)
