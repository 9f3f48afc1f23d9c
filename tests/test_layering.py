"""The apps import each other in one direction only: each layer imports only the layers below it.

Bottom to top: core (roles, audit, encrypted fields, htmx and validation helpers), registries,
rules, pipeline, clusters, console (the project: settings, URLs, dashboard). The converter and
the node agent are libraries that import no app and no Django at all. Imports inside functions
count too: a lazy import of a higher layer is still a dependency on it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "registries", "rules", "pipeline", "clusters", "console"]
LIBRARIES = ["converter", "agent"]


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every absolute import in a module, at any depth."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


def modules_of(package: str) -> list[Path]:
    return sorted(path for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts)


def test_imported_packages_sees_nested_and_from_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os.path\nfrom pipeline.models import X\n\ndef f():\n    from clusters import kube\n"
                      "from . import sibling\n")
    assert imported_packages(module) == {"os", "pipeline", "clusters"}


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_no_layer_above_it(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & above) for path in modules_of(layer)
    }
    assert {path: packages for path, packages in offenders.items() if packages} == {}
    assert modules_of(layer), f"{layer} has no modules: is the layer list current?"


@pytest.mark.parametrize("library", LIBRARIES)
def test_libraries_import_no_app_and_no_django(library):
    if not (ROOT / library).is_dir():
        pytest.fail(f"{library}/ is missing")
    forbidden = {*LAYERS, "django", "rest_framework", "celery"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & forbidden) for path in modules_of(library)
    }
    assert {path: packages for path, packages in offenders.items() if packages} == {}


def test_every_app_is_in_a_layer():
    """A new app must be placed in LAYERS (and in INSTALLED_APPS in the same order)."""
    from django.conf import settings

    ours = [app for app in settings.INSTALLED_APPS if (ROOT / app / "apps.py").exists() or (ROOT / app).is_dir()]
    assert ours == LAYERS
