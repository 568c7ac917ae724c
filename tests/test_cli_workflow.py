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


def test_convert_out_that_is_a_folder_is_a_usage_error(run_cli, project, tmp_path):
    write_builtin_workflows(project.workflows)
    r = run_cli("workflow", "convert", "base_flux.json", "--out", str(tmp_path))
    assert r.code == 2, r.err
    assert f"--out {tmp_path} is a folder" in r.err
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_init_writes_missing_workflows_and_keeps_edited_ones(run_cli, project):
    r = run_cli("workflow", "init")
    assert r.code == 0 and r.out.split() == [str(project.workflows / "base_flux.json"),
                                             str(project.workflows / "finetuned_flux.json")]
    edited = project.workflows / "base_flux.json"
    edited.write_text(edited.read_text().replace("red fox", "blue fox"))
    r = run_cli("workflow", "init")
    assert r.out == "" and "kept your base_flux.json, finetuned_flux.json" in r.err
    assert "blue fox" in edited.read_text()
    r = run_cli("workflow", "init", "--force")
    assert "red fox" in edited.read_text() and len(r.out.split()) == 2


# ---- against a ComfyUI test double (its /object_info and /models)

def test_check_against_a_server_uses_its_schema_and_model_lists(run_cli, project):
    from tests.comfy_double import ComfyDouble

    write_builtin_workflows(project.workflows)
    models = {"checkpoints": ["flux1-dev.safetensors"],
              "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
              "vae": ["ae.safetensors"], "loras": ["other.safetensors"], "diffusion_models": []}
    with ComfyDouble(models=models) as comfy:
        r = run_cli("workflow", "check", "finetuned_flux.json", "--server", comfy.url)
        assert r.code == 2, r.err
        assert f"checked against the server at {comfy.url}" in r.err
        assert "node 4 (LoraLoader) input lora_name: 'flux_dreambooth.safetensors' not in list " \
               "(available: other.safetensors)" in r.err
        r = run_cli("workflow", "check", "base_flux.json", "--server", comfy.url)
        assert r.code == 0, r.err
        assert r.out.startswith("ok: ") and "model files were not checked" not in r.err
        r = run_cli("workflow", "convert", "base_flux.json", "--server", comfy.url)
        assert r.code == 0 and json.loads(r.out)["1"]["class_type"] == "CheckpointLoaderSimple"
        assert ("GET", "/object_info") in comfy.requests


def test_server_that_does_not_answer_is_a_runtime_error(run_cli, project):
    import socket

    write_builtin_workflows(project.workflows)
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("workflow", "check", "base_flux.json", "--server", f"http://127.0.0.1:{port}")
    assert r.code == 1 and f"127.0.0.1:{port}" in r.err and "Traceback" not in r.err


def test_a_project_without_workflows_uses_the_shipped_ones_like_generate(run_cli, project):
    assert not (project.workflows / "base_flux.json").exists()
    r = run_cli("workflow", "convert", "base_flux.json")
    assert r.code == 0, r.err
    assert {n["class_type"] for n in json.loads(r.out).values()} >= {"SamplerCustomAdvanced", "SaveImage"}
    assert "using the shipped one" in r.err and "workflow init" in r.err
    r = run_cli("workflow", "check", "workflows/finetuned_flux.json")
    assert r.code == 0 and r.out.startswith("ok: workflows/finetuned_flux.json"), r.err
    r = run_cli("workflow", "check", "finetuned")                  # not one of ours: still an error
    assert r.code == 2 and "does not exist" in r.err
    assert not (project.workflows / "base_flux.json").exists()     # nothing written
