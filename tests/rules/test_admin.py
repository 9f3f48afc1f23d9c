"""Django admin for rules: list with filters and search; the model's rules apply there too."""

from django.contrib.auth.models import User

from rules.models import Rule


def test_admin_changelist_filters_and_search(client, make_rule):
    make_rule("alpha", namespace="web")
    make_rule("beta", namespace="ops", enabled=False)
    admin = User.objects.create_superuser("root", password="x-long-password-1")
    client.force_login(admin)
    page = client.get("/admin/rules/rule/").content.decode()
    assert "alpha" in page and "beta" in page and "By enabled" in page
    searched = client.get("/admin/rules/rule/?q=ops").content.decode()
    assert "beta" in searched and "alpha" not in searched


def test_admin_add_refuses_a_bad_pattern(client, instance):
    admin = User.objects.create_superuser("root", password="x-long-password-1")
    client.force_login(admin)
    response = client.post("/admin/rules/rule/add/", {
        "instance": instance.pk, "name": "x", "namespace": "team", "repository_pattern": "(unclosed",
        "tag_pattern": "", "enabled": "on", "position": "0", "format": "estargz", "prioritized_files": "[]",
        "chunk_size": "4194304", "compression": "best",
    })
    assert response.status_code == 200
    assert "Invalid RE2 pattern: missing ): (unclosed." in response.content.decode()
    assert not Rule.objects.exists()
