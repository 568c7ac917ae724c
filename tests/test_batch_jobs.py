"""Job files: expansion of grids, name templates, and validation errors with line numbers."""

from __future__ import annotations

import pytest

from orchestrator.batch.jobs import load_job_file
from orchestrator.errors import ConfigError

EXAMPLE = """\
defaults: {workflow: workflows/finetuned_flux.json, size: 1024x1024, steps: 28, guidance: 3.5, lora: flux_dreambooth.safetensors, strength: 1.0, out: outputs/batch-toy}
jobs:
  - prompt: "a tjtoy toy on a desk"
    seeds: [1, 2, 3, 4]          # or count: 4 with seed: 100
    strengths: [0.6, 0.8, 1.0]
    name: "toy-{strength}-{seed}"
  - prompt: ["a tjtoy toy in the snow", "a tjtoy toy on the moon"]
    loras: [flux_dreambooth-000025.safetensors, flux_dreambooth.safetensors]
    set: {"SaveImage.filename_prefix": "x"}
"""


def load(tmp_path, text):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    return load_job_file(path)


def errors(tmp_path, text) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert e.value.exit_code == 2
    return [d.split("jobs.yaml:", 1)[1] for d in e.value.details] or [e.value.message.split("jobs.yaml:", 1)[1]]


def test_the_documented_example_expands_as_a_grid(tmp_path):
    jf = load(tmp_path, EXAMPLE)
    assert jf.out == "outputs/batch-toy" and jf.groups == 2
    assert len(jf.jobs) == 12 + 4
    first = jf.jobs[:12]
    assert [j.name for j in first[:5]] == ["toy-0.6-1", "toy-0.6-2", "toy-0.6-3", "toy-0.6-4", "toy-0.8-1"]
    assert {(j.strength, j.seed) for j in first} == {(s, n) for s in (0.6, 0.8, 1.0) for n in (1, 2, 3, 4)}
    j = first[0]
    assert (j.width, j.height, j.steps, j.guidance, j.lora) == (1024, 1024, 28, 3.5, "flux_dreambooth.safetensors")
    assert j.workflow == "workflows/finetuned_flux.json" and j.line == 3
    rest = jf.jobs[12:]
    assert [(j.prompt, j.lora) for j in rest] == [
        (p, lo) for p in ("a tjtoy toy in the snow", "a tjtoy toy on the moon")
        for lo in ("flux_dreambooth-000025.safetensors", "flux_dreambooth.safetensors")]
    assert all(j.sets == (("SaveImage.filename_prefix", "x"),) and j.seed == 0 for j in rest)
    assert rest[0].name == "a-tjtoy-toy-in-the-snow-flux_dreambooth-000025-1.0-1024x1024-0"
    assert len({j.key for j in jf.jobs}) == 16 and [j.index for j in jf.jobs] == list(range(16))


def test_keys_are_stable_and_depend_on_settings(tmp_path):
    a = load(tmp_path, EXAMPLE).jobs
    b = load(tmp_path, EXAMPLE).jobs
    c = load(tmp_path, EXAMPLE.replace("steps: 28", "steps: 20")).jobs
    assert [j.key for j in a] == [j.key for j in b]
    assert not {j.key for j in a} & {j.key for j in c}


def test_count_with_base_seed_sizes_and_no_lora(tmp_path):
    jf = load(tmp_path, "jobs:\n  - prompt: a cat\n    seed: 100\n    count: 3\n    sizes: [512x768, 768x512]\n"
                        "    lora: none\n")
    assert [(j.seed, j.size) for j in jf.jobs] == [(s, z) for z in ("512x768", "768x512") for s in (100, 101, 102)]
    assert all(j.lora is None and j.strength == 0 and j.workflow == "workflows/base_flux.json" for j in jf.jobs)
    assert jf.out == "outputs/batch-jobs"


def test_problems_are_all_listed_with_their_lines(tmp_path):
    text = ("defaults:\n"
            "  size: 1000x7\n"           # 2
            "  colour: red\n"            # 3
            "jobs:\n"
            "  - prompt: ''\n"           # 5
            "    seeds: [1, x]\n"        # 6
            "  - prompt: ok\n"
            "    count: 0\n"             # 8
            "    strengths: [0.5, high]\n"  # 9
            "    guidance: lots\n"       # 10
            "    set: {nodot: 1}\n")     # 11
    errs = errors(tmp_path, text)
    assert "3: defaults.colour: unknown setting 'colour'" in errs[0]
    joined = "\n".join(errs)
    for expected in ["2: defaults.size: '1000x7' is not a size", "5: jobs[0].prompt: '' is not",
                     "6: jobs[0].seeds[1]: 'x' is not a seed", "8: jobs[1].count: 0 is not a count",
                     "9: jobs[1].strengths[1]: 'high' is not a LoRA strength from -100 to 100",
                     "9: jobs[1].strengths: a strength needs a LoRA", "10: jobs[1].guidance: 'lots'",
                     "11: jobs[1].set.nodot: 'nodot' is not <node id or title>.<input>"]:
        assert expected in joined, (expected, joined)
    assert joined.count("defaults.size") == 1    # a bad default is reported once


def test_yaml_syntax_error_and_duplicate_key_have_lines(tmp_path):
    assert errors(tmp_path, "jobs:\n  - prompt: a\n    seeds: [1, 2\n")[0].startswith("4: not valid YAML")
    dup = errors(tmp_path, "jobs:\n  - prompt: a\n    seed: 1\n    seed: 2\n")
    assert dup[0].startswith("4: not valid YAML: duplicate key 'seed' (first on line 3)")


def test_structure_errors(tmp_path):
    assert "expected a mapping" in errors(tmp_path, "- a\n- b\n")[0]
    assert "jobs: expected a non-empty list" in errors(tmp_path, "defaults: {steps: 4}\n")[0]
    assert "missing `prompt`" in errors(tmp_path, "jobs:\n  - seed: 1\n")[0]
    assert "either `seeds: [..]` or `count`" in errors(tmp_path, "jobs:\n  - {prompt: a, seeds: [1], count: 2}\n")[0]
    with pytest.raises(ConfigError) as e:
        load_job_file(tmp_path / "nope.yaml")
    assert "not found" in e.value.message


def test_job_file_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b"jobs:\n  - prompt: caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_job_file(path)
    assert e.value.message == f"{path}:2: not UTF-8 text" and "UTF-8" in (e.value.hint or "")


def test_name_templates(tmp_path):
    bad = errors(tmp_path, 'jobs:\n  - prompt: a\n    name: "x-{colour}"\n')
    assert bad[0].startswith("3: jobs[0].name: bad name template") and "fields:" in bad[0]
    clash = errors(tmp_path, 'jobs:\n  - prompt: a\n    seeds: [1, 2]\n    name: "same"\n')
    assert "is also used by a different job" in clash[0]
    jf = load(tmp_path, 'jobs:\n  - prompt: "A/B: c"\n    name: "../{slug}/{seed:04d}"\n')
    assert jf.jobs[0].name == "a-b-c-0000"     # no path separators, no leading dots


def test_identical_jobs_are_made_once(tmp_path):
    jf = load(tmp_path, "jobs:\n  - {prompt: a, seed: 1}\n  - {prompt: a, seed: 1}\n")
    assert len(jf.jobs) == 1 and "identical to line 2" in jf.duplicates[0]


def test_non_finite_numbers_and_seeds_past_2_64_are_problems(tmp_path):
    found = errors(tmp_path, "jobs:\n  - prompt: a\n    lora: x.safetensors\n    strength: .nan\n    guidance: .inf\n")
    assert any("strength: nan is not a LoRA strength from -100 to 100" in e for e in found), found
    assert any("guidance: inf is not a FLUX guidance from 0 to 100" in e for e in found), found
    found = errors(tmp_path, f"jobs:\n  - prompt: a\n    seed: {2**64 - 2}\n    count: 3\n")
    assert any("go past the largest seed 2^64-1" in e for e in found), found


def test_values_outside_what_comfyui_takes_and_control_characters_are_problems(tmp_path):
    found = errors(tmp_path, "defaults:\n  out: \"out\\0x\"\njobs:\n  - prompt: \"a\\0\"\n    size: 8x8\n    steps: 100000\n"
                             "    guidance: 101\n    lora: x.safetensors\n    strength: 1000\n    sampler: \"e\\tx\"\n"
                             "    workflow: \"w\\0.json\"\n")
    text = "\n".join(found)
    for fragment in ("defaults.out: expected a folder path (contains a control character)",
                     "jobs[0].prompt: 'a\\x00' is not a non-empty prompt text",
                     "jobs[0].size: '8x8' is not a size WxH with width and height multiples of 16",
                     "jobs[0].steps: 100000 is not a whole number of steps from 1 to 10000",
                     "jobs[0].guidance: 101 is not a FLUX guidance from 0 to 100",
                     "jobs[0].strength: 1000 is not a LoRA strength from -100 to 100",
                     "jobs[0].sampler: 'e\\tx' is not a sampler name",
                     "jobs[0].workflow: 'w\\x00.json' is not a workflow file path"):
        assert fragment in text, (fragment, text)
    jf = load(tmp_path, 'jobs:\n  - prompt: "line one\\nline two"\n    size: 64x4096\n')
    assert jf.jobs[0].prompt == "line one\nline two"      # prompts may span lines
