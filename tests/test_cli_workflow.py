"""`workflow convert | check` end to end, in-process."""

from __future__ import annotations

import json

from orchestrator.comfy.builtin import write_builtin_workflows


def test_convert_prints_the_api_prompt_of_a_file_in_workflows(run_cli, project):
    write_builtin_workflows(project.workflows)
    r = run_cli("workflow", "convert", "finetuned_flux.json")
    assert r.code == 0, r.err
    prompt = json.loads(r.out)
    assert {n["class_type"] for n in prompt.values()} >= {"LoraLoader", "SamplerCustomAdvanced", "SaveImage"}


def test_convert_with_set_and_out_writes_the_file(run_cli, project, tmp_path):
    write_builtin_workflows(project.workflows)
    out = tmp_path / "prompt.json"
    r = run_cli("workflow", "convert", str(project.workflows / "base_flux.json"), "--set", "Prompt.text=a red fox",
                "--set", "BasicScheduler.steps=20", "--out", str(out))
    assert r.code == 0, r.err
    assert r.out.strip() == str(out)
    prompt = json.loads(out.read_text())
    by_type = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert by_type["CLIPTextEncode"]["text"] == "a red fox" and by_type["BasicScheduler"]["steps"] == 20


def test_check_ok_and_warns_about_models_missing_locally(run_cli, project):
    write_builtin_workflows(project.workflows)
    (project.loras / "flux_dreambooth.safetensors").write_bytes(b"")
    r = run_cli("workflow", "check", "finetuned_flux")
    assert r.code == 0, r.err
    assert r.out.startswith("ok: ") and "valid prompt of 15 nodes" in r.out
    assert "checkpoints/flux1-dev.safetensors" in r.err and "loras/" not in r.err


def test_check_lists_every_problem_and_exits_2(run_cli, project, tmp_path):
    write_builtin_workflows(project.workflows)
    r = run_cli("workflow", "check", "base_flux.json", "--set", "BasicScheduler.steps=0",
                "--set", "KSamplerSelect.sampler_name=warp")
    assert r.code == 2
    assert "2 problems" in r.err
    assert "input steps: 0 is smaller than the minimum 1" in r.err
    assert "input sampler_name: 'warp' not in list" in r.err
    assert r.out == "" and "Traceback" not in r.err


def test_bad_files_render_one_screen_errors(run_cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [\n  {"id": 1 "type": "X"}\n]}')
    r = run_cli("workflow", "convert", str(bad))
    assert r.code == 2 and "line 2 column" in r.err and "^" in r.err
    r = run_cli("workflow", "check", str(tmp_path / "missing.json"))
    assert r.code == 2 and "does not exist" in r.err


def test_unknown_node_offline_points_to_server(run_cli, tmp_path):
    f = tmp_path / "custom.json"
    f.write_text(json.dumps({"nodes": [{"id": 1, "type": "UltimateUpscale", "mode": 0, "inputs": [],
                                        "outputs": [], "widgets_values": []}], "links": []}))
    r = run_cli("workflow", "convert", str(f))
    assert r.code == 2 and "UltimateUpscale" in r.err and "--server" in r.err


def test_usage_errors(run_cli, project):
    assert run_cli("workflow").code == 2
    write_builtin_workflows(project.workflows)
    r = run_cli("workflow", "convert", "base_flux.json", "--set", "nodot=3")
    assert r.code == 2 and "NODE.INPUT=VALUE" in r.err
