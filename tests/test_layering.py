"""The dependency direction of docs/design.md, section 3: `nn` and `data` know no model, `evaluate` imports
no model class, nothing calls the CLI, the parts of the package and its modules import each other
without cycles (imports inside functions count: they are dependencies too), no module imports
the package root back, none re-exports what it imports, and nothing outside `models/` reads a
private attribute of another object (a model's `_images`, `_encode`, ...)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radiogenomics"


def _part(module: str) -> str:
    """radiogenomics.data.cohort -> data; radiogenomics.pp -> pp."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


SOURCES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in SOURCES.items()}


def _targets(node: ast.AST) -> set[str]:
    """The radiogenomics modules one import statement imports (`from radiogenomics.radiomap
    import definitions` imports the module radiogenomics.radiomap.definitions)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "radiogenomics"}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.split(".")[0] != "radiogenomics":
            return set()
        return {
            f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in SOURCES else node.module
            for a in node.names
        }
    return set()


def _imports() -> dict[str, set[str]]:
    """{module: the radiogenomics modules it imports, anywhere in its code}."""
    return {
        name: {t for node in ast.walk(tree) for t in _targets(node)} for name, tree in TREES.items()
    }


IMPORTS = _imports()
FORBIDDEN = {
    # part: parts it must not import
    "nn": {"models", "cli", "data", "train", "evaluate"},
    "data": {"models", "cli", "train", "evaluate", "nn"},
    "evaluate": {"models", "cli"},
    "train": {"models", "cli", "evaluate", "data"},
    "radiomap": {"models", "cli"},
    "config": {"data", "models", "cli", "train", "evaluate", "nn"},
    "pp": {"models", "cli", "train", "evaluate", "nn"},
    "pl": {"models", "cli", "train"},
    "tl": {"models", "cli", "train"},
    "models": {"cli"},
    "_atomic": {p for p in {_part(m) for m in IMPORTS} if p not in ("", "_atomic")},
}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_part_imports_what_it_must_not(part):
    bad = sorted(
        f"{module} imports {target}"
        for module, targets in IMPORTS.items()
        if _part(module) == part
        for target in targets
        if _part(target) in FORBIDDEN[part]
    )
    assert not bad, bad


def test_the_parts_import_each_other_without_cycles():
    graph: dict[str, set[str]] = {}
    for module, targets in IMPORTS.items():
        src = _part(module)
        graph.setdefault(src, set()).update(
            _part(t) for t in targets if _part(t) not in ("", src, "_keys")
        )
    graph.pop("", None)  # the package's __init__ re-exports; it is not a part
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(
                f"import cycle: {' -> '.join(stack[stack.index(node) :] + [node])}"
            )
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path [a, b, ..., a], or None."""
    done, stack = set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def visit(node):
        if node in stack:
            return stack[stack.index(node) :] + [node]
        if node in done:
            return None
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_the_modules_import_each_other_without_cycles():
    """Module by module, not only part by part: features -> batched -> features was a cycle
    inside one part. A package's __init__ counts as a module."""
    graph = {
        module: {t for t in targets if t in SOURCES and t != module}
        for module, targets in IMPORTS.items()
    }
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_a_module_that_imports_only_at_top_level_has_no_cycle_either():
    """The cycles that would break `import` itself: top-level imports only, no exceptions."""

    def top_level(tree) -> set[str]:
        found = set()

        def visit(node):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    continue
                found.update(_targets(child))
                visit(child)

        visit(tree)
        return found

    graph = {
        module: {t for t in top_level(tree) if t in SOURCES and t != module}
        for module, tree in TREES.items()
    }
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle at import time: {' -> '.join(cycle)}"


# TODO(lead, issue 25): imports of the package root that other branches remove; delete each entry
# when it is gone (the test says when)
def test_no_module_imports_the_package_root():
    """`from radiogenomics import __version__` (or `import radiogenomics`) runs the root
    __init__, which imports the parts: an import back up. `from radiogenomics import pl` is an
    import of the module radiogenomics.pl and fine."""
    found = set()
    for module, tree in TREES.items():
        if module == "radiogenomics":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {
                    (module, "radiogenomics") for a in node.names if a.name == "radiogenomics"
                }
            elif isinstance(node, ast.ImportFrom) and node.module == "radiogenomics":
                found |= {
                    (module, a.name) for a in node.names if f"radiogenomics.{a.name}" not in SOURCES
                }
    assert not found, sorted(found)


def test_no_module_re_exports_what_it_imports():
    """One home per name: an import kept only so that others can import the name from here
    (`# noqa: F401`) is an alias; the package's __init__ files, which define the public API,
    are the exception."""
    found = set()
    for module, path in SOURCES.items():
        if path.name == "__init__.py":
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(TREES[module]):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] != "radiogenomics":
                    continue
                whole = "F401" in lines[node.lineno - 1]  # on the line of `from x import (`
                found |= {
                    (module, a.asname or a.name)
                    for a in node.names
                    if whole or "F401" in lines[a.lineno - 1]
                }
    assert not found, sorted(found)


def _private_reads(module: str) -> list[str]:
    """`name._attr` in a module: a private attribute (one leading underscore) read through a
    name other than self/cls; names bound to third-party modules (`torch._foreach_lerp_`) are
    another library's business."""
    tree = TREES[module]
    foreign = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            foreign |= {
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] != "radiogenomics"
            }
        elif isinstance(node, ast.ImportFrom) and (node.level or node.module):
            if node.level == 0 and node.module.split(".")[0] != "radiogenomics":
                foreign |= {a.asname or a.name for a in node.names}
    return sorted(
        f"{module}:{node.lineno}: {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.value.id not in ("self", "cls")
        and node.value.id not in foreign
    )


def test_the_private_attribute_scan_finds_what_it_should():
    source = "def f(model, self):\n    return model._images, self._ok, model.__class__\n"
    TREES["<probe>"] = ast.parse(source)
    try:
        assert [r.split(": ")[1] for r in _private_reads("<probe>")] == ["model._images"]
    finally:
        del TREES["<probe>"]


def test_nothing_outside_models_reads_a_private_attribute():
    """docs/design.md, section 3: models hand their data over through public methods; nothing outside
    `models/` reads a model's (or any other object's) private attributes."""
    found = [
        hit for module in SOURCES if _part(module) != "models" for hit in _private_reads(module)
    ]
    assert not found, found
