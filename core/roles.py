"""Roles as Django groups: viewer (read), operator (rules, jobs, clusters), admin (everything).

Each role includes the ones below it; superusers are admins. Views use `RoleRequiredMixin` or
`role_required`; API views declare `write_role` (and optionally `action_roles`) and get
`RolePermission` by default.
"""

from enum import IntEnum
from functools import wraps

from django.contrib.auth.mixins import AccessMixin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission


class Role(IntEnum):
    NONE = 0
    VIEWER = 10
    OPERATOR = 20
    ADMIN = 30

    @property
    def group_name(self) -> str:
        return self.name.lower()


ROLE_GROUPS = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


def role_of(user) -> Role:
    """The highest role the user holds (NONE for anonymous or ungrouped users)."""
    if not user or not user.is_authenticated or not user.is_active:
        return Role.NONE
    if user.is_superuser:
        return Role.ADMIN
    cached = getattr(user, "_apparate_role", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = max((role for role in ROLE_GROUPS if role.group_name in names), default=Role.NONE)
        user._apparate_role = cached
    return cached


def has_role(user, role: Role) -> bool:
    return role_of(user) >= role


class RoleRequiredMixin(AccessMixin):
    """Class-based views: GET/HEAD need `read_role`, other methods need `write_role`."""

    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        needed = self.read_role if request.method in SAFE_METHODS else self.write_role
        if not has_role(request.user, needed):
            raise PermissionDenied(f"This needs the {needed.group_name} role.")
        return super().dispatch(request, *args, **kwargs)


def role_required(read_role: Role = Role.VIEWER, write_role: Role = Role.OPERATOR):
    """Function-based views: the same rule as RoleRequiredMixin."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            needed = read_role if request.method in SAFE_METHODS else write_role
            if not has_role(request.user, needed):
                raise PermissionDenied(f"This needs the {needed.group_name} role.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


class RolePermission(BasePermission):
    """DRF: reads need viewer; writes need the view's `write_role` (default admin).

    `action_roles = {"validate": Role.VIEWER}` overrides the role for one viewset action; a pair
    `(read role, write role)` sets both for an action that answers GET and POST.
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        action_roles = getattr(view, "action_roles", {})
        action = getattr(view, "action", None)
        if action in action_roles:
            needed = action_roles[action]
            if isinstance(needed, tuple):
                needed = needed[0] if request.method in SAFE_METHODS else needed[1]
        elif request.method in SAFE_METHODS:
            needed = getattr(view, "read_role", Role.VIEWER)
        else:
            needed = getattr(view, "write_role", Role.ADMIN)
        return has_role(request.user, needed)
