"""The README's "Use from Python" examples, run as written against stand-ins: a seed project as the
current folder, a stand-in sd-scripts checkout at ~/sd-scripts, a stand-in ComfyUI checkout at ~/ComfyUI,
the ComfyUI double for generating. Only the port (8188 may be taken here) and the URL are swapped."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from orchestrator.runtimes import local_comfyui
from tests.comfy_double import ComfyDouble
from tests.comfy_standin import fake_checkout
from tests.standin import make_local_trainer
from tests.test_comfy_server import free_ports
from tests.train_project import make_seed_project

README = Path(__file__).resolve().parents[1] / "README.md"


def examples() -> list[str]:
    """The ```python blocks of the README's "Use from Python" section."""
    text = README.read_text()
    section = text.split("\n## Use from Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3, "the section documents three examples"
    return blocks


def run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    return out.getvalue()


@pytest.fixture
def here(project, monkeypatch, tmp_path):
    """The project as the current folder, HOME with the stand-in checkouts."""
    make_seed_project(project, size=(64, 64))
    home = tmp_path / "home"
    checkout, python = make_local_trainer(home)
    fake_checkout(home / "ComfyUI")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project.root)
    yield project
    local_comfyui.down(project, grace=2)


def test_plan_a_training_run(here):
    out = run(examples()[0])
    assert "flux_train_network.py" in out and "--output_name tjtoy" in out
    assert re.search(r"^warn sd_scripts ", out, re.M) and re.search(r"^ok python ", out, re.M)   # one check a line


def test_start_list_and_stop_comfyui(here):
    port = free_ports()
    out = run(examples()[1].replace("port=8188", f"port={port}"))
    assert out.count(f"http://127.0.0.1:{port}") == 2
    assert local_comfyui.running(here) is None                        # serve.down stopped it


def test_generate_an_image(here):
    with ComfyDouble() as comfy:
        out = run(examples()[2].replace("http://127.0.0.1:8188", comfy.url))
        [body] = comfy.posted
    assert "outputs/script" in out and ".png" in out
    texts = [n["inputs"].get("text") for n in body["prompt"].values()]
    assert "a tjtoy toy on a desk" in texts                           # the --set value reached the server
