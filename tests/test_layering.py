"""The dependency direction of DESIGN section 3: `nn` and `data` know no model, `evaluate` imports
no model class, nothing calls the CLI, and the parts of the package import each other without
cycles (imports inside functions count: they are dependencies too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radiogenomics"


def _part(module: str) -> str:
    """radiogenomics.data.cohort -> data; radiogenomics.pp -> pp."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[str, set[str]]:
    """{module: the radiogenomics modules it imports, anywhere in its code}."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("radiogenomics")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("radiogenomics"):
                    found.add(node.module)
                    # `from radiogenomics import pl` imports the module radiogenomics.pl
                    if node.module == "radiogenomics":
                        found |= {f"radiogenomics.{a.name}" for a in node.names}
        out[name] = found
    return out


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
