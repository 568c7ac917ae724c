"""docs/ARCHITECTURE.md matches the code: every module path it names exists, every `Name` in `module`
it names is defined there, and the runtimes it describes are the registry's."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator import runtimes

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
EXAMPLE_ONLY = {"orchestrator/runtimes/ray.py"}   # the "how to add a runtime" example


def test_every_module_path_named_exists():
    paths = set(re.findall(r"\b((?:orchestrator|tests|bench)/[\w/]*\w(?:\.py)?/?)", DOC))
    dotted = {p.replace(".", "/") for p in re.findall(r"`(orchestrator(?:\.\w+)+)", DOC)}
    assert len(paths) > 40
    missing = []
    for p in sorted(paths - EXAMPLE_ONLY):
        if not (ROOT / p).exists():
            missing.append(p)
    for p in sorted(dotted):
        parent, name = p.rsplit("/", 1)
        if (ROOT / f"{p}.py").exists() or (ROOT / p).is_dir():
            continue
        owner = ROOT / f"{parent}.py" if (ROOT / f"{parent}.py").exists() else ROOT / parent / "__init__.py"
        if not (owner.exists() and re.search(rf"^(?:class|def) {name}\b", owner.read_text(), re.M)):
            missing.append(p)
    assert missing == []


def test_every_name_said_to_live_in_a_module_is_defined_there():
    pairs = re.findall(r"`(\w+)`(?: \w+)? in `((?:orchestrator|tests)/[\w/]+\.py)`", DOC)
    assert len(pairs) >= 10
    undefined = [f"{name} in {path}" for name, path in pairs
                 if not re.search(rf"^\s*(?:class|def) {name}\b", (ROOT / path).read_text(), re.M)]
    assert undefined == []


def test_the_runtimes_table_lists_the_registry():
    for entry in runtimes.REGISTRY:
        for target in (t for t in (entry.server, entry.train) if t is not None):
            module, _, cls = target.partition(":")
            assert f"`{cls}` in `{module.replace('.', '/')}.py`" in DOC
