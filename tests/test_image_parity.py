"""`generate` and `batch` are one pipeline: the same inputs through both CLIs, against the ComfyUI double.

Each case gives knob values once; they become `generate --KNOB VALUE` and a job file's `KNOB: VALUE`
(plain YAML scalars, as people write them). Both must accept or refuse alike: for a valid case the
API prompts both submit are identical (but for the SaveImage prefix, which batch sets to the job
name); for a bad one both exit with the same code, show the same problem sentence, submit nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.comfy_double import DEFAULT_MODELS, ComfyDouble

LORAS = ["flux_dreambooth.safetensors", "flux_dreambooth-000025.safetensors", "styles/Watercolor.safetensors",
         "a/twin.safetensors", "b/twin.safetensors", "notes.txt"]


@pytest.fixture(scope="module")
def double():
    with ComfyDouble(steps=2, models={**DEFAULT_MODELS, "loras": LORAS}) as d:
        yield d


VALID = [
    {"lora": "flux_dreambooth"},                                    # the name that failed 4 of 8 batch jobs
    {"lora": "flux_dreambooth.safetensors", "strength": 0.8},
    {"lora": "FLUX_DreamBooth.SAFETENSORS", "strength": 0.5, "strength_clip": 1},
    {"lora": "Watercolor", "strength": 1.2},                        # a sub-folder, found by its stem
    {"lora": "styles/watercolor"},
    {"size": "512x768", "steps": 4, "guidance": 2.5, "sampler": "euler", "scheduler": "simple"},
    {"size": "1152x896", "lora": "flux_dreambooth-000025"},
    {"count": 2},
    {"lora": "none", "steps": 3},
    {"set": ("BasicScheduler.denoise", "0.75")},
]

INVALID = [
    ({"size": "1000x1000"}, 2, "'1000x1000' is not a size WxH with width and height multiples of 16 from 64 to 4096"),
    ({"size": "512x500"}, 2, "'512x500' is not a size WxH"),
    ({"size": "32x32"}, 2, "'32x32' is not a size WxH"),
    ({"steps": 0}, 2, "0 is not a whole number of steps from 1 to 10000"),
    ({"steps": "lots"}, 2, "'lots' is not a whole number of steps from 1 to 10000"),
    ({"steps": 2.5}, 2, "2.5 is not a whole number of steps"),
    ({"guidance": -1}, 2, "-1 is not a FLUX guidance from 0 to 100"),
    ({"lora": "flux_dreambooth", "strength": 200}, 2, "200 is not a LoRA strength from -100 to 100"),
    ({"strength": 0.5}, 2, "a strength needs a LoRA"),
    ({"count": 0}, 2, "0 is not a count (a whole number from 1 to 10000)"),
    ({"lora": "nope"}, 2, "LoRA 'nope' not found on ComfyUI at {url}"),
    ({"lora": "flux_dreambooht"}, 2,
     "LoRA 'flux_dreambooht' not found on ComfyUI at {url}; did you mean 'flux_dreambooth.safetensors'"),
    ({"lora": "notes"}, 2, "LoRA 'notes' not found"),                 # not a model file: ComfyUI does not list it
    ({"lora": "twin"}, 2, "LoRA 'twin' matches 2 files on ComfyUI at {url}: a/twin.safetensors, b/twin.safetensors"),
    ({"sampler": "eular"}, 2, "'eular' is not a sampler of KSamplerSelect on ComfyUI at {url}"),
    ({"scheduler": "nope"}, 2, "'nope' is not a scheduler of BasicScheduler"),
]


def _argv(case: dict, url: str) -> list[str]:
    argv = ["generate", "a red fox", "--seed", "7", "--server", url]
    for key, value in case.items():
        if key == "set":
            argv += ["--set", f"{value[0]}={value[1]}"]
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _job_file(case: dict, path: Path) -> Path:
    lines = ["jobs:", '  - prompt: "a red fox"', "    seed: 7"]
    for key, value in case.items():
        if key == "set":
            lines.append(f'    set: {{"{value[0]}": {value[1]}}}')
        else:
            lines.append(f"    {key}: {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _both(run_cli, project, double, case: dict, n: int):
    before = len(double.posted)
    gen = run_cli(*_argv(case, double.url))
    generated = double.posted[before:]
    jobs = _job_file(case, project.root / f"jobs{n}.yaml")
    before = len(double.posted)
    batch = run_cli("batch", "run", str(jobs), "--server", double.url, "--out", str(project.root / f"out{n}"))
    return gen, generated, batch, double.posted[before:]


def _without_prefix(prompt: dict) -> dict:
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"].pop("filename_prefix")
    return prompt


@pytest.mark.parametrize("case", VALID, ids=[json.dumps(c) for c in VALID])
def test_valid_inputs_make_the_same_prompts(run_cli, project, double, case):
    gen, generated, batch, batched = _both(run_cli, project, double, case, VALID.index(case))
    assert gen.code == 0, gen.err
    assert batch.code == 0, batch.err
    assert len(generated) == len(batched) == case.get("count", 1)
    assert [_without_prefix(b["prompt"]) for b in batched] == [_without_prefix(g["prompt"]) for g in generated]
    n = VALID.index(case)
    made = sorted((project.root / f"out{n}").glob("*.json"))
    shown = [Path(p).with_suffix(".json") for p in gen.out.split()]
    knobs = ("prompt", "seed", "lora", "strength", "strength_clip", "width", "height", "steps", "guidance", "sampler",
             "scheduler")
    in_batch = sorted(tuple((k, d.get(k)) for k in knobs) for d in (json.loads(p.read_text()) for p in made))
    in_generate = sorted(tuple((k, d.get(k)) for k in knobs) for d in (json.loads(p.read_text()) for p in shown))
    assert in_batch == in_generate                                  # the same sidecar fields, the same values


@pytest.mark.parametrize("case,code,problem", INVALID, ids=[json.dumps(c[0]) for c in INVALID])
def test_invalid_inputs_are_refused_alike(run_cli, project, double, case, code, problem):
    problem = problem.format(url=double.url)
    gen, generated, batch, batched = _both(run_cli, project, double, case, 100 + INVALID.index(
        (case, code, problem.replace(double.url, "{url}"))))
    assert (gen.code, batch.code) == (code, code), (gen.err, batch.err)
    assert problem in gen.err, gen.err
    assert problem in batch.err, batch.err
    assert generated == batched == []
    assert "Traceback" not in gen.err + batch.err


def test_the_lora_resolved_is_what_the_server_lists(run_cli, project, double):
    """The case that failed on the GPU: `lora: flux_dreambooth` is sent as the server's exact file name."""
    gen, generated, batch, batched = _both(run_cli, project, double, {"lora": "Watercolor"}, 200)
    for posted in (generated[0], batched[0]):
        lora = next(n["inputs"] for n in posted["prompt"].values() if n["class_type"] == "LoraLoader")
        assert lora["lora_name"] == "styles/Watercolor.safetensors"
        assert lora["strength_model"] == lora["strength_clip"] == 1.0
