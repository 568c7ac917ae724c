"""Layering: library code never imports the CLI package (only orchestrator/cli and __main__ may)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_library_modules_do_not_import_the_cli():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        bad = sorted(n for n in _imports(path) if n == "orchestrator.cli" or n.startswith("orchestrator.cli."))
        offenders += [f"{rel}: {n}" for n in bad]
    assert offenders == []


def test_the_table_renderer_lives_below_the_cli():
    from orchestrator.cli.table import render_table as old
    from orchestrator.table import render_table

    assert old is render_table
    assert render_table(["a", "bb"], [[1, None]]) == "a  bb\n-  --\n1"
