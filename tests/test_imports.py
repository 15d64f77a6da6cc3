"""The package's floors: `core/` imports only `core/`, a family folder only
`core/` and itself, and no module imports itself back through others."""

import ast
import pathlib

import pytest

import keras_gradnets

ROOT = pathlib.Path(keras_gradnets.__file__).parent


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports():
    """Every module of the package and the package modules it imports."""
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {}
    for path in paths:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from package import module` imports the module.
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    names.add(name if name in modules else node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        graph[_module_name(path)] = {
            name for name in names if name.split(".")[0] == "keras_gradnets"
        }
    return graph


def _floor(module):
    """`"core"`, a family folder's name, or `"top"` (the public modules)."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()):
        return parts[1]
    return "top"


GRAPH = _imports()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_runs_back_up_a_floor(module):
    floor = _floor(module)
    if floor == "top":
        return
    allowed = {"core"} if floor == "core" else {"core", floor}
    wrong = sorted(d for d in GRAPH[module] if _floor(d) not in allowed)
    assert not wrong, f"{module} ({floor}) imports {wrong}"


def test_no_import_cycle():
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done or module not in GRAPH:
            return
        path.append(module)
        for dependency in sorted(GRAPH[module]):
            visit(dependency)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_floor_check_sees_the_package():
    # A walk that found no modules, or no family imports, would pass.
    assert _floor("keras_gradnets.core.state") == "core"
    assert _floor("keras_gradnets.gradnets.grelu") == "gradnets"
    assert _floor("keras_gradnets.layers") == "top"
    assert "keras_gradnets.core.state" in GRAPH["keras_gradnets.gradnets.grelu"]
