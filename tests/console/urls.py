"""URLconf for console tests: the real console routes plus small views that exercise the shell's
role checks and audit attribution through each door (web form, token-authenticated API)."""

from django import forms
from django.contrib.auth.models import Group, User
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import include, path
from django.views import View
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from console.urls import urlpatterns as console_urlpatterns
from core.roles import Role, RoleRequiredMixin, role_required


class GroupForm(forms.ModelForm):
    class Meta:
        model = Group
        fields = ["name"]


@role_required(write_role=Role.ADMIN)
def group_form(request, pk=None):
    group = get_object_or_404(Group, pk=pk) if pk else None
    if request.method != "POST":
        return HttpResponse("form")
    if request.POST.get("delete"):
        group.delete()
        return HttpResponse("deleted")
    form = GroupForm(request.POST, instance=group)
    if not form.is_valid():
        return HttpResponse(str(form.errors), status=400)
    form.save()
    return HttpResponse("saved")


@role_required(write_role=Role.ADMIN)
def user_groups(request, pk):
    user = get_object_or_404(User, pk=pk)
    user.groups.set(Group.objects.filter(name__in=request.POST.getlist("groups")))
    return HttpResponse("saved")


class OperatorView(RoleRequiredMixin, View):
    def get(self, request):
        return HttpResponse("read")

    def post(self, request):
        return HttpResponse("wrote")


class GroupSerializer(serializers.ModelSerializer):
    class Meta:
        model = Group
        fields = ["id", "name"]


class GroupViewSet(viewsets.ModelViewSet):
    queryset = Group.objects.order_by("pk")
    serializer_class = GroupSerializer
    write_role = Role.OPERATOR
    action_roles = {"ping": Role.VIEWER}

    @action(detail=False, methods=["post"])
    def ping(self, request):
        return Response({"pong": True})


router = SimpleRouter()
router.register("test-groups", GroupViewSet, basename="test-groups")

urlpatterns = [
    path("test/groups/", group_form),
    path("test/groups/<int:pk>/", group_form),
    path("test/users/<int:pk>/groups/", user_groups),
    path("test/operator/", OperatorView.as_view()),
    path("api/v1/", include(router.urls)),
    *console_urlpatterns,
]
