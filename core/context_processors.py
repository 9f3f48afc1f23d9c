"""Template context shared by every page: the user's role for showing or hiding actions."""

from core.roles import Role, role_of


def console(request):
    role = role_of(getattr(request, "user", None))
    return {
        "user_role": role,
        "can_operate": role >= Role.OPERATOR,
        "can_admin": role >= Role.ADMIN,
    }
