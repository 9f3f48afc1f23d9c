"""The rule form: model validation at the fields, paths one per line, instance choice."""

from registries.models import Instance
from rules.forms import RuleForm
from rules.models import Rule


def form_data(instance, **overrides):
    data = {
        "instance": instance.pk, "name": "prod", "description": "", "namespace": "team",
        "repository_pattern": "app", "tag_pattern": r"\d+\.\d+", "enabled": "on", "format": "estargz",
        "prioritized_files": "", "chunk_size": str(4 * 1024 * 1024), "compression": "best",
    }
    data.update(overrides)
    return data


def test_valid_form(instance):
    form = RuleForm(form_data(instance, prioritized_files="usr/bin/app\n\n ./etc/app.conf \n"))
    assert form.is_valid(), form.errors
    assert form.instance.prioritized_files == ["/usr/bin/app", "/etc/app.conf"]


def test_bad_pattern_error_is_at_the_field(instance):
    form = RuleForm(form_data(instance, repository_pattern="(unclosed", tag_pattern="a{2,1}"))
    assert not form.is_valid()
    assert form.errors["repository_pattern"] == ["Invalid RE2 pattern: missing ): (unclosed."]
    assert form.errors["tag_pattern"] == ["Invalid RE2 pattern: invalid repetition size: {2,1}."]


def test_namespace_and_paths_errors(instance):
    form = RuleForm(form_data(instance, namespace="team/*", prioritized_files="/ok\n/../etc/passwd"))
    assert not form.is_valid()
    assert "without slashes" in form.errors["namespace"][0]
    assert "contains '..'" in form.errors["prioritized_files"][0]


def test_duplicate_name_error_is_at_the_name(instance):
    Rule.objects.create(instance=instance, name="prod", namespace="team")
    form = RuleForm(form_data(instance))
    assert not form.is_valid()
    assert form.errors["name"] == ["A rule named 'prod' already exists for instance 'main'."]


def test_acceleration_off_is_refused_with_a_clear_message(instance):
    off = Instance.objects.create(name="cold", url="https://cold.example.com")
    form = RuleForm(form_data(off))
    assert "cold (acceleration off)" in str(form["instance"])
    assert not form.is_valid()
    assert "Acceleration is off for instance 'cold'" in form.errors["instance"][0]


def test_edit_form_keeps_the_instance(instance):
    rule = Rule.objects.create(instance=instance, name="prod", namespace="team", prioritized_files=["/a", "/b"])
    other = Instance.objects.create(name="other", url="https://other.example.com", acceleration_enabled=True)
    assert "/a\n/b" in str(RuleForm(instance=rule)["prioritized_files"])
    form = RuleForm(form_data(other, name="renamed"), instance=rule)
    assert form.is_valid(), form.errors
    assert form.instance.instance == instance
    assert form.instance.name == "renamed"


def test_pattern_inputs_check_themselves_live(instance):
    html = str(RuleForm()["tag_pattern"])
    assert 'hx-post="/rules/check-pattern/"' in html
    assert 'hx-trigger="input changed delay:300ms"' in html
    assert 'hx-target="#check-tag_pattern"' in html
