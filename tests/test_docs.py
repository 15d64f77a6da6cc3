"""The documentation site covers every public name; versions agree.

`mkdocs build --strict` (in `.ci/run`) fails on a reference that does not
resolve; these tests fail on a public name without a page entry or a
docstring, and on a version that the changelog or the site disagree on.
"""

import importlib.util
import inspect
import pathlib
import re
import types

import pytest

import keras_gradnets

ROOT = pathlib.Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"
NAMESPACES = ["layers", "callbacks", "schedules", "plotting", "analysis"]


def _entries(page):
    text = (API / page).read_text()
    return re.findall(r"^::: ([\w.]+)$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_has_an_entry_on_its_page(namespace):
    module = getattr(keras_gradnets, namespace)
    expected = [f"keras_gradnets.{namespace}.{name}" for name in module.__all__]
    assert sorted(_entries(f"{namespace}.md")) == sorted(expected)


def test_every_top_level_function_has_an_entry():
    functions = [
        f"keras_gradnets.{name}"
        for name in keras_gradnets.__all__
        if not name.startswith("_")
        and not isinstance(getattr(keras_gradnets, name), types.ModuleType)
    ]
    assert sorted(_entries("index.md")) == sorted(functions)
    namespaces = {
        name
        for name in keras_gradnets.__all__
        if isinstance(getattr(keras_gradnets, name), types.ModuleType)
    }
    assert namespaces == set(NAMESPACES)


@pytest.mark.parametrize(
    "name",
    [
        f"{namespace}.{name}"
        for namespace in NAMESPACES
        for name in getattr(keras_gradnets, namespace).__all__
    ]
    + ["finalize", "gradualize", "insert_after", "replace_layers"],
)
def test_every_public_name_has_a_docstring(name):
    obj = keras_gradnets
    for part in name.split("."):
        obj = getattr(obj, part)
    doc = inspect.getdoc(obj) or ""
    assert len(doc.split()) >= 5, f"keras_gradnets.{name} is undocumented"


def test_the_changelog_and_the_site_show_the_package_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    latest = re.search(r"^## (\S+)", changelog, flags=re.MULTILINE).group(1)
    assert latest == keras_gradnets.__version__
    spec = importlib.util.spec_from_file_location(
        "hooks", ROOT / "docs" / "hooks.py"
    )
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    config = hooks.on_config(types.SimpleNamespace(site_name="keras_gradnets"))
    assert config.site_name == f"keras_gradnets {keras_gradnets.__version__}"
