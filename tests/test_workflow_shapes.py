"""Browser workflows of the wrong shape (what a hand edit or another tool leaves): `workflow check`
and `workflow convert` name the node and field, exit 2, never crash. Found by tests/test_fuzz_inputs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = json.loads((REPO / "workflows" / "base_flux.json").read_text())


def _node(doc, type_):
    return next(n for n in doc["nodes"] if n["type"] == type_)


def _mutated(change):
    doc = json.loads(json.dumps(BASE))
    change(doc)
    return doc


CASES = {
    "an input that is not an object": (lambda d: _node(d, "BasicScheduler")["inputs"].__setitem__(0, " "),
                                       "inputs[0] is not an object"),
    "an output that is a number": (lambda d: _node(d, "VAELoader")["outputs"].__setitem__(0, 1.5),
                                   "outputs[0] is not an object"),
    "output links that are not ids": (lambda d: _node(d, "VAELoader")["outputs"][0].__setitem__("links", ["x"]),
                                      "outputs[0] has a field of the wrong type"),
    "properties as text": (lambda d: _node(d, "BasicScheduler").__setitem__("properties", "x"),
                           '"properties" has the wrong type'),
    "mode as a list": (lambda d: _node(d, "BasicScheduler").__setitem__("mode", [1, 2]), '"mode" must be a number'),
    "widgets_values as a number": (lambda d: _node(d, "BasicScheduler").__setitem__("widgets_values", 3),
                                   '"widgets_values" has the wrong type'),
    "a link slot of infinity": (lambda d: d["links"][0].__setitem__(2, float("inf")), "malformed link"),
    "a huge negative link slot": (lambda d: d["links"][0].__setitem__(4, -10**18), "malformed link"),
    "nodes as an object": (lambda d: d.__setitem__("nodes", {"a": 1}), "is not a ComfyUI workflow"),
    "definitions as a list": (lambda d: d.__setitem__("definitions", [1]), '"definitions" is not an object'),
    "subgraph nodes of the wrong shape": (
        lambda d: d.__setitem__("definitions", {"subgraphs": [{"id": "s", "name": "sub", "nodes": [{"id": 1, "type": "X",
                                                                                                  "inputs": [3]}]}]}),
        "subgraph sub: node 1 (X): inputs[0] is not an object"),
}


@pytest.mark.parametrize("action", ["check", "convert"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_shapes_are_named_errors(case, action, run_cli, project):
    change, fragment = CASES[case]
    path = project.workflows / "broken.json"
    path.write_text(json.dumps(_mutated(change)))
    r = run_cli("workflow", action, "broken.json")
    assert r.code == 2, r.err
    assert fragment in r.err, r.err
    assert r.err.startswith("error: ") and "unexpected" not in r.err and "Traceback" not in r.err


def test_a_huge_value_does_not_fill_the_screen(run_cli, project):
    path = project.workflows / "broken.json"
    path.write_text(json.dumps(_mutated(lambda d: _node(d, "BasicScheduler").__setitem__("type", "x" * 10_000))))
    r = run_cli("workflow", "check", "broken.json")
    assert r.code == 2
    assert all(len(line) <= 600 for line in r.err.splitlines()) and len(r.err) < 3000
