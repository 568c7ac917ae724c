"""The one LoRA resolver and the one workflow resolver (orchestrator.comfy.resolve)."""

from __future__ import annotations

import json
import subprocess

import pytest

from orchestrator.comfy.builtin import builtin_workflows
from orchestrator.comfy.resolve import resolve_lora, resolve_workflow
from orchestrator.errors import ConfigError

LISTED = ["flux_dreambooth-000025.safetensors", "flux_dreambooth.safetensors", "sdxl/Style.ckpt",
          "styles/Watercolor.safetensors", "a/twin.safetensors", "b/twin.safetensors", "twin-v2.sft"]
REAL_COMFYUI = "/work/.mirror/pollockjj+ComfyUI/repo"


@pytest.mark.parametrize("given,expected", [
    ("flux_dreambooth.safetensors", "flux_dreambooth.safetensors"),   # exact
    ("flux_dreambooth", "flux_dreambooth.safetensors"),               # no extension
    ("FLUX_DreamBooth.SafeTensors", "flux_dreambooth.safetensors"),   # any case
    ("  flux_dreambooth-000025  ", "flux_dreambooth-000025.safetensors"),
    ("styles/watercolor", "styles/Watercolor.safetensors"),           # a sub-folder, any case
    ("styles\\Watercolor.safetensors", "styles/Watercolor.safetensors"),
    ("Watercolor", "styles/Watercolor.safetensors"),                  # the stem, in any sub-folder
    ("style", "sdxl/Style.ckpt"),                                     # another model extension
    ("twin-v2", "twin-v2.sft"),
])
def test_lora_names_people_type(given, expected):
    assert resolve_lora(given, LISTED) == expected


def test_ambiguous_and_missing_names_say_what_exists():
    with pytest.raises(ConfigError) as e:
        resolve_lora("twin", LISTED, where="ComfyUI at http://x")
    assert e.value.message == "LoRA 'twin' matches 2 files on ComfyUI at http://x: a/twin.safetensors, b/twin.safetensors"
    assert "a/twin.safetensors" in e.value.hint
    with pytest.raises(ConfigError) as e:
        resolve_lora("flux_dreambooht", LISTED)
    assert e.value.message.endswith("did you mean 'flux_dreambooth.safetensors' or 'flux_dreambooth-000025.safetensors'?")
    assert e.value.hint.startswith("available: flux_dreambooth-000025.safetensors, flux_dreambooth.safetensors")
    with pytest.raises(ConfigError) as e:
        resolve_lora("zzz", [])
    assert "did you mean" not in e.value.message and "available: (none)" in e.value.hint


def test_without_a_server_list_a_bare_name_gets_the_extension():
    assert resolve_lora("flux_dreambooth", None) == "flux_dreambooth.safetensors"
    assert resolve_lora("sub/x.ckpt", None) == "sub/x.ckpt"


def test_real_comfyui_lists_exactly_and_validates_exactly():
    """Ground truth for the double and the resolver, from ComfyUI 0.8.0's source (skipped without it)."""
    def show(path: str) -> str:
        r = subprocess.run(["git", "-C", REAL_COMFYUI, "show", f"3cd7b32f:{path}"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"ComfyUI source not available ({r.stderr.strip()[:80]})")
        return r.stdout

    folder_paths, execution = show("folder_paths.py"), show("execution.py")
    from tests.comfy_double import MODEL_EXTENSIONS

    assert "supported_pt_extensions: set[str] = {'.ckpt', '.pt', '.pt2', '.bin', '.pth', '.safetensors', '.pkl', " \
           "'.sft'}" in folder_paths and MODEL_EXTENSIONS == {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors",
                                                              ".pkl", ".sft"}
    assert "os.path.splitext(a)[-1].lower() in extensions" in folder_paths          # extension: any case
    assert "relative_path = os.path.relpath(os.path.join(dirpath, file_name), directory)" in folder_paths  # sub/x
    assert "if val not in combo_options:" in execution                              # the name must match exactly


def test_the_double_lists_loras_like_comfyui():
    from tests.comfy_double import ComfyDouble

    with ComfyDouble(models={"loras": ["b.safetensors", "A/x.SAFETENSORS", "readme.md", "c.pt"]}) as d:
        import requests

        listed = requests.get(d.url + "/models/loras", timeout=5).json()
        info = requests.get(d.url + "/object_info/LoraLoader", timeout=5).json()
    assert listed == ["A/x.SAFETENSORS", "b.safetensors", "c.pt"]
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == listed


def test_workflow_names(project, tmp_path, monkeypatch):
    default = resolve_workflow(None, project, lora=True)
    assert default.shipped and default.label == "builtin:finetuned_flux.json"
    assert resolve_workflow("workflows/base_flux.json", project).label == "builtin:base_flux.json"
    assert resolve_workflow("finetuned_flux", project).label == "builtin:finetuned_flux.json"
    ours = project.workflows / "finetuned_flux.json"
    ours.write_text(json.dumps(builtin_workflows()["finetuned_flux.json"]))
    assert resolve_workflow(None, project, lora=True).label == str(ours)          # the project's copy wins
    assert resolve_workflow("workflows/finetuned_flux.json", project).label == str(ours)
    (project.workflows / "mine.json").write_text(json.dumps(builtin_workflows()["base_flux.json"]))
    assert resolve_workflow("mine", project).label == str(project.workflows / "mine.json")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(builtin_workflows()["base_flux.json"]))
    monkeypatch.chdir(tmp_path)
    assert resolve_workflow("elsewhere.json", project, relative_to=tmp_path).label == str(elsewhere)
    assert resolve_workflow(str(elsewhere), project).label == str(elsewhere)
    with pytest.raises(ConfigError) as e:
        resolve_workflow("gone.json", project)
    assert e.value.message == "workflow file gone.json does not exist"
    assert "base_flux.json, finetuned_flux.json, mine.json" in e.value.hint
