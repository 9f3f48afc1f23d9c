"""REST API of rules: CRUD, filters, acceleration refusal, reordering and the validate action."""

import pytest

from core.roles import Role
from registries.models import Instance
from rules.models import Rule
from tests.rules.conftest import HOST

LIST = "/api/v1/rules/"


@pytest.fixture
def api(api_as):
    return api_as(Role.OPERATOR)


def payload(instance, **overrides):
    data = {"instance": instance.pk, "name": "prod", "namespace": "team", "repository_pattern": "app",
            "tag_pattern": r"\d+\.\d+"}
    data.update(overrides)
    return data


def test_create_read_update_delete(api, instance):
    response = api.post(LIST, payload(instance, prioritized_files=["usr/bin/app", "/usr/bin/app"]), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["instance_name"] == "main"
    assert body["prioritized_files"] == ["/usr/bin/app"]
    assert body["chunk_size"] == 4 * 1024 * 1024 and body["compression"] == "best" and body["format"] == "estargz"
    assert body["position"] == 1 and body["is_active"] is True
    url = f"{LIST}{body['id']}/"
    assert api.get(url).json()["name"] == "prod"
    response = api.patch(url, {"enabled": False, "compression": "fast"}, format="json")
    assert response.status_code == 200, response.json()
    rule = Rule.objects.get()
    assert not rule.enabled and rule.compression == "fast"
    assert api.delete(url).status_code == 204
    assert not Rule.objects.exists()


def test_bad_fields_are_refused_at_the_field(api, instance):
    response = api.post(LIST, payload(instance, namespace="a/b", tag_pattern="(unclosed", chunk_size=10,
                                      compression="zip", prioritized_files="/not-a-list"), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert errors["tag_pattern"] == ["Invalid RE2 pattern: missing ): (unclosed."]
    assert "without slashes" in errors["namespace"][0]
    assert set(errors) >= {"chunk_size", "compression", "prioritized_files"}
    assert not Rule.objects.exists()


def test_too_long_pattern_is_refused(api, instance):
    response = api.post(LIST, payload(instance, repository_pattern="a" * 1025), format="json")
    assert response.status_code == 400
    assert "repository_pattern" in response.json()


def test_duplicate_name_is_refused_at_the_name(api, instance, make_rule):
    make_rule("prod")
    response = api.post(LIST, payload(instance), format="json")
    assert response.status_code == 400
    assert response.json() == {"name": ["A rule named 'prod' already exists for instance 'main'."]}


def test_acceleration_off_refuses_creation(api):
    cold = Instance.objects.create(name="cold", url="https://cold.example.com")
    response = api.post(LIST, payload(cold), format="json")
    assert response.status_code == 400
    assert "Acceleration is off for instance 'cold'" in response.json()["instance"][0]
    assert not Rule.objects.exists()


def test_instance_cannot_change(api, instance, make_rule):
    rule = make_rule("prod")
    other = Instance.objects.create(name="other", url="https://other.example.com", acceleration_enabled=True)
    response = api.patch(f"{LIST}{rule.pk}/", {"instance": other.pk}, format="json")
    assert response.status_code == 400
    rule.refresh_from_db()
    assert rule.instance == instance


def test_position_is_read_only_and_move_reorders(api, instance, make_rule):
    first, second = make_rule("first"), make_rule("second")
    api.patch(f"{LIST}{first.pk}/", {"position": 99}, format="json")
    first.refresh_from_db()
    assert first.position == 1
    response = api.post(f"{LIST}{second.pk}/move/", {"direction": "up"}, format="json")
    assert response.status_code == 200 and response.json()["position"] == 1
    assert list(instance.rules.order_by("position").values_list("name", flat=True)) == ["second", "first"]
    assert api.post(f"{LIST}{second.pk}/move/", {"direction": "left"}, format="json").status_code == 400


def test_filters_search_and_ordering(api, instance, make_rule):
    other = Instance.objects.create(name="other", url="https://other.example.com", acceleration_enabled=True)
    make_rule("alpha", namespace="team", description="frontend images")
    make_rule("beta", namespace="ops", enabled=False)
    make_rule("gamma", instance=other)

    def names(query):
        return [rule["name"] for rule in api.get(LIST + query).json()["results"]]

    assert names(f"?instance={other.pk}") == ["gamma"]
    assert names("?enabled=false") == ["beta"]
    assert names("?namespace=ops") == ["beta"]
    assert names("?search=frontend") == ["alpha"]
    assert names("?ordering=-name") == ["gamma", "beta", "alpha"]


def test_validate_matching_address(api, make_rule):
    rule = make_rule("prod", repository_pattern="app", tag_pattern=r"\d+\.\d+")
    response = api.post(f"{LIST}{rule.pk}/validate/", {"address": f"{HOST}/team/app:1.2"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["matched"] is True and body["first_failure"] is None
    assert body["reference"] == {"host": HOST, "namespace": "team", "repository": "app", "tag": "1.2", "digest": None}
    assert [c["name"] for c in body["criteria"]] == ["instance host", "namespace", "repository", "tag", "enabled"]
    assert all(c["passed"] for c in body["criteria"])


def test_validate_non_matching_address_gives_the_breakdown(api, make_rule):
    rule = make_rule("prod", repository_pattern="app", tag_pattern=r"\d+\.\d+")
    response = api.post(f"{LIST}{rule.pk}/validate/", {"address": "other.example.com/team/app2:1.0-rc1"},
                        format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["matched"] is False
    passed = {c["name"]: c["passed"] for c in body["criteria"]}
    assert passed == {"instance host": False, "namespace": True, "repository": False, "tag": False, "enabled": True}
    assert body["first_failure"]["name"] == "instance host"
    details = {c["name"]: c["detail"] for c in body["criteria"]}
    assert details["tag"] == r"tag '1.0-rc1' does not fully match '\d+\.\d+'"
    assert details["repository"] == "repository 'app2' does not fully match 'app'"


def test_validate_unparseable_address_is_400_with_the_parser_message(api, make_rule):
    rule = make_rule("prod")
    response = api.post(f"{LIST}{rule.pk}/validate/", {"address": "https://registry/team/app"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"address": ["Leave out the scheme: write registry.example.com/team/app:1.0, not a URL."]}
    assert api.post(f"{LIST}{rule.pk}/validate/", {}, format="json").status_code == 400
