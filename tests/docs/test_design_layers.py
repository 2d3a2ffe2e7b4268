"""docs/design.md's layering, checked on the source: imports only point down.

`pgtrain/` never imports `projects/` or `tools/`, and no module below `pgtrain/engine/` imports
`pgtrain.engine` (at module level or inside a function); the tools (`pgtrain/tools/`,
`pgtrain/cli.py`) are the top layer, above the engine.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "pgtrain")


def modules() -> list[str]:
    found = []
    for folder, _, files in os.walk(PACKAGE):
        found += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def imported(path: str) -> set[str]:
    """Every module name `path` imports, relative imports resolved against its package."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
    return names


_ABOVE_THE_REST = ("engine" + os.sep, "tools" + os.sep, "cli.py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: os.path.relpath(p, ROOT))
def test_imports_point_down(path):
    names = imported(path)
    assert not {n for n in names if n.split(".")[0] in ("projects", "tools", "configs")}, names
    if not os.path.relpath(path, PACKAGE).startswith(_ABOVE_THE_REST):
        upward = {n for n in names if n == "pgtrain.engine" or n.startswith("pgtrain.engine.")}
        assert not upward, f"{path} imports {upward}; pass the value down instead"
