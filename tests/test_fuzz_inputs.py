"""Fuzz-style: valid config files (data.toml, train.yaml, a batch job file, a workflow JSON) mutated
systematically and with a seeded random generator (types swapped, numbers out of range, negative,
huge, nan; strings empty, unicode, control characters; keys dropped and duplicated; latin-1, UTF-16,
BOM, NUL bytes; truncation at many offsets), then the real commands run through the CLI's main
function: exit 0 or 2 (2 where the mutation is known to break the file), a one-screen message, no
traceback, no "bug"/"unexpected" wording, and nothing written. A few also run as real processes."""

from __future__ import annotations

import copy
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.layout import Layout
from tests.standin import make_local_trainer
from tests.test_batch_jobs import EXAMPLE as JOBS
from tests.train_project import SEED_TOML, make_seed_project

REPO = Path(__file__).resolve().parents[1]
TOML = SEED_TOML.format(tjtoy="flux_data/tjtoy", spark="flux_data/sparkgpu")
TRAIN_YAML = """\
preset: default
network_dim: 16            # LoRA rank
max_train_epochs: 4
learning_rate: 1.0
seed: 42
sample_prompts: [a tjtoy toy on a desk --d 7]
network_args: {split_qkv: true}
optimizer_args: {weight_decay: 0.01}
lr_warmup_steps: 0.05
resolution: 1024
"""
WORKFLOW = (REPO / "workflows" / "base_flux.json").read_text(encoding="utf-8")
SCREEN = 40              # lines of stderr a message may take

YAML_VALUES = ["0", "-1", "-99999999999999999999999", "99999999999999999999999", "1e400", ".nan", ".inf", "-.inf",
               "1.5", '""', '" "', '"\\0"', '"\\t"', '"\\e[31m"', '"é✓ 漢字"', '"\\u202e"', "true", "false", "null",
               "~", "[]", "{}", "[1, 2]", "{a: 1}", "[[1]]", "'x' ", "x" * 300, "!!binary aGk=", "*undefined",
               "!!python/object/apply:os.system [echo hi]", "&a [*a]", "none", "off", "auto", "2024-01-01"]
TOML_VALUES = ["0", "-1", "-9223372036854775808", "9223372036854775807", "99999999999999999999", "inf", "-inf",
               "nan", "1.5", "1e308", '""', '" "', '"\\u0000"', '"\\t"', '"é✓ 漢字"', '"\\u202e"', "true", "false",
               "[]", "[1, 2]", "[0, 0]", "[1024, 768, 5]", '["a"]', "{a = 1}", "{}", "1979-05-27", "'x'", "[[1]]"]
JSON_VALUES = [None, 0, -1, 10**30, -10**30, 1.5, float("nan"), float("inf"), "", " ", "\u0000", "\t\n",
               "é✓ 漢字", "\u202e", True, False, [], {}, [1, 2], {"a": 1}, [[1]], "x" * 5000]


@dataclass(frozen=True)
class Target:
    """One kind of file: where it lives, its valid text, the command that reads it."""

    name: str
    path: str                       # relative to the project
    text: str
    argv: Callable[[dict], list[str]]


def _targets() -> list[Target]:
    return [
        Target("data.toml", "flux_data/data.toml", TOML, lambda ctx: ["dataset", "check"]),
        Target("train.yaml", "train.yaml", TRAIN_YAML, lambda ctx: ["train", "--plan", *ctx["local"]]),
        Target("jobs.yaml", "jobs.yaml", JOBS, lambda ctx: ["batch", "plan", str(ctx["root"] / "jobs.yaml")]),
        Target("workflow", "workflows/fuzz.json", WORKFLOW, lambda ctx: ["workflow", "check", "fuzz.json"]),
    ]


# -- mutations: (label, bytes or text, expect) where expect is 2 (must fail), 0 (must pass) or None (either) ----
def _encodings(text: str) -> Iterator[tuple[str, bytes, int | None]]:
    accented = _with_accent(text)
    yield "latin-1", accented.encode("latin-1", "replace"), 2
    yield "utf-16", text.encode("utf-16"), 2
    yield "utf-16-le no bom", text.encode("utf-16-le"), 2
    yield "utf-8 bom", b"\xef\xbb\xbf" + text.encode(), 0
    yield "utf-8 accent", accented.encode(), 0
    yield "empty", b"", None
    yield "only whitespace", b" \n\t\n", None
    data = text.encode()
    for at in (0, len(data) // 3, len(data) // 2, len(data) - 2):
        yield f"NUL at {at}", data[:at] + b"\x00" + data[at:], 2
    yield "CR line ends", text.replace("\n", "\r\n").encode(), None
    yield "lone CR line ends", text.replace("\n", "\r").encode(), None
    yield "invalid utf-8 byte", data[:10] + b"\xff\xfe" + data[10:], 2


def _with_accent(text: str) -> str:
    """The text with an accented letter inside a comment or string (still the same config in UTF-8)."""
    if "# LoRA rank" in text:
        return text.replace("# LoRA rank", "# LoRA rank é")
    if '"id": "' in text:
        return text.replace('"id": "', '"id": "é', 1)
    if "tjtoy toy" in text:
        return text.replace("tjtoy toy", "tjtoy toy é", 1)
    return text.replace("a tjtoy", "é tjtoy", 1)


def _truncations(text: str, rng: random.Random, n: int) -> Iterator[tuple[str, bytes, int | None]]:
    data = text.encode()
    cuts = sorted({*(len(data) * k // 10 for k in range(1, 10)), *(rng.randrange(1, len(data)) for _ in range(n))})
    for at in cuts:
        yield f"truncated at {at}", data[:at], None


_ASSIGN = re.compile(r"^(\s*)([A-Za-z_][\w.\-]*)(\s*[=:]\s*)(.+?)(\s*#.*)?$")


def _line_mutations(text: str, values: list[str], rng: random.Random, n: int) -> Iterator[tuple[str, bytes, int | None]]:
    """Per `key = value` / `key: value` line: every value on a few lines, random values elsewhere; drop/duplicate."""
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if _ASSIGN.match(line.rstrip("\n"))]
    systematic = set(rng.sample(keyed, min(2, len(keyed))))
    for i in keyed:
        m = _ASSIGN.match(lines[i].rstrip("\n"))
        assert m is not None
        chosen = values if i in systematic else rng.sample(values, min(n, len(values)))
        for v in chosen:
            new = f"{m[1]}{m[2]}{m[3]}{v}{m[5] or ''}\n"
            yield f"line {i + 1} {m[2]} -> {v[:20]!r}", "".join(lines[:i] + [new] + lines[i + 1:]).encode(), None
        yield f"line {i + 1} dropped", "".join(lines[:i] + lines[i + 1:]).encode(), None
        yield f"line {i + 1} duplicated", "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]).encode(), None


def _yaml_mutations(text: str, rng: random.Random, n: int) -> Iterator[tuple[str, bytes, int | None]]:
    """Nested values of a YAML file (network_args.x, jobs[0].seeds[1], defaults.size) swapped and dropped."""
    import yaml

    doc = yaml.safe_load(text)
    paths: list[tuple] = []

    def walk(node, p):
        if p:
            paths.append(p)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, p + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, p + (i,))

    walk(doc, ())
    for p in rng.sample(paths, min(3 * n, len(paths))):
        for v in rng.sample(JSON_VALUES, min(n, len(JSON_VALUES))):
            yield f"{'.'.join(map(str, p))} -> {str(v)[:20]!r}", yaml.safe_dump(_set(doc, p, v)).encode(), None
        yield f"{'.'.join(map(str, p))} dropped", yaml.safe_dump(_set(doc, p, _DROP)).encode(), None


def _json_mutations(text: str, rng: random.Random, n: int) -> Iterator[tuple[str, bytes, int | None]]:
    """Values anywhere in the workflow JSON swapped for other types and extremes; keys dropped."""
    doc = json.loads(text)
    paths: list[tuple] = []

    def walk(node, p):
        paths.append(p)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, p + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, p + (i,))

    walk(doc, ())
    important = [p for p in paths if p and p[0] in ("nodes", "links") and len(p) <= 4]
    for p in rng.sample(important, min(n, len(important))) + [("nodes",), ("links",), ("nodes", 0), ("links", 0)]:
        for v in rng.sample(JSON_VALUES, 4):
            yield f"{'/'.join(map(str, p))} -> {str(v)[:20]!r}", _dumps(_set(doc, p, v)), None
        if isinstance(p[-1], str):
            yield f"{'/'.join(map(str, p))} dropped", _dumps(_set(doc, p, _DROP)), None
    for key, value in (("nodes", "5"), ("links", '"x"'), ("nodes", "[]")):   # a key given twice: the last one wins
        yield f"duplicate {key}", text.replace("{", '{"' + key + '": ' + value + ",", 1).encode(), None
        yield f"duplicate {key} after", text.rstrip().rstrip("}").rstrip().encode() + f', "{key}": {value}}}'.encode(), None
    yield "top level is a list", _dumps([doc]), 2
    yield "top level is a number", b"42", 2
    yield "deeply nested", b"[" * 100_000 + b"]" * 100_000, 2


_DROP = object()


def _set(doc, path, value):
    out = copy.deepcopy(doc)
    node = out
    for k in path[:-1]:
        node = node[k]
    if value is _DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _dumps(obj) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _mutations(target: Target, rng: random.Random, n: int) -> Iterator[tuple[str, bytes, int | None]]:
    yield "unchanged", target.text.encode(), 0
    yield from _encodings(target.text)
    yield from _truncations(target.text, rng, n)
    if target.name == "workflow":
        yield from _json_mutations(target.text, rng, n)
    else:
        yield from _line_mutations(target.text, TOML_VALUES if target.name == "data.toml" else YAML_VALUES, rng, n)
    if target.name in ("train.yaml", "jobs.yaml"):
        yield from _yaml_mutations(target.text, rng, n)


# -- the harness ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    layout = Layout.at(root / "project")
    layout.ensure_dirs(*layout.model_dirs().values(), layout.tokenizers, layout.flux_data, layout.workflows)
    make_seed_project(layout, size=(64, 64))
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, layout.workflows / name)
    checkout, python = make_local_trainer(root / "trainer")
    return {"root": layout.root, "local": ["--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python)]}


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p != skip:
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _run(argv: list[str], root: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--project-dir", str(root), *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _check_one(target: Target, ctx: dict, label: str, data: bytes, expect: int | None) -> str | None:
    """Run the command on one mutation; the reason it is wrong, or None."""
    root = ctx["root"]
    path = root / target.path
    path.write_bytes(data)
    before = _snapshot(root, path)
    code, out, err = _run(target.argv(ctx), root)
    problems = []
    if code not in (0, 2) or (expect is not None and code != expect):
        problems.append(f"exit {code} (expected {expect if expect is not None else '0 or 2'})")
    for bad in (r"Traceback", r"\bbug\b", r"error: unexpected"):
        if re.search(bad, err):
            problems.append(f"{bad!r} in stderr")
    if len(err.splitlines()) > SCREEN or len(err) > 8000:
        problems.append(f"stderr is {len(err.splitlines())} lines / {len(err)} characters")
    if code == 2 and "error:" not in err and not re.search(r"^  ERROR ", out, re.M):   # train --plan: its checks
        problems.append("exit 2 without an `error:` line (or a failed check in the plan)")
    if _snapshot(root, path) != before:
        problems.append("files changed")
    return f"{target.name} [{label}]: {'; '.join(problems)}\n{err[-1500:]}" if problems else None


def _fuzz(target: Target, ctx: dict, seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    failures = []
    try:
        for label, data, expect in _mutations(target, rng, n):
            problem = _check_one(target, ctx, label, data, expect)
            if problem:
                failures.append(problem)
    finally:
        (ctx["root"] / target.path).write_text(target.text, encoding="utf-8")
    return failures


@pytest.mark.parametrize("target", _targets(), ids=lambda t: t.name)
def test_mutated_config_files_fail_clearly(target, fuzz_project):
    failures = _fuzz(target, fuzz_project, seed=20240601, n=2)
    assert not failures, f"{len(failures)} bad outcome(s):\n\n" + "\n\n".join(failures[:8])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("target", _targets(), ids=lambda t: t.name)
def test_mutated_config_files_fail_clearly_more_seeds(target, seed, fuzz_project):
    failures = _fuzz(target, fuzz_project, seed=seed, n=len(YAML_VALUES))
    assert not failures, f"{len(failures)} bad outcome(s):\n\n" + "\n\n".join(failures[:8])


@pytest.mark.parametrize("target", _targets(), ids=lambda t: t.name)
def test_broken_files_fail_clearly_in_a_real_process(target, fuzz_project):
    """The same contract from a real `python -m orchestrator` (what a user's shell sees)."""
    root = fuzz_project["root"]
    path = root / target.path
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for data in (target.text.encode("utf-16"), target.text.encode()[: len(target.text) // 2] + b"\x00"):
            path.write_bytes(data)
            r = subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(root),
                                *target.argv(fuzz_project)], capture_output=True, text=True, timeout=120, env=env)
            assert r.returncode == 2, r.stderr
            assert "error: " in r.stderr and "Traceback" not in r.stderr and not re.search(r"\bbug\b", r.stderr)
            assert len(r.stderr.splitlines()) <= SCREEN
    finally:
        path.write_text(target.text, encoding="utf-8")
