"""load_workflow: format detection and clear errors for everything that is not a workflow."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from orchestrator.comfy.workflow import detect_kind, load_workflow, png_text_chunks
from orchestrator.errors import ConfigError
from tests.comfy_graphs import chain

API = {"3": {"class_type": "Latent", "inputs": {"width": 8, "height": 8}}}


def test_detects_ui_and_api(tmp_path):
    (tmp_path / "ui.json").write_text(json.dumps(chain()))
    (tmp_path / "api.json").write_text(json.dumps(API))
    ui = load_workflow(tmp_path / "ui.json")
    assert (ui.kind, ui.path, ui.name) == ("ui", tmp_path / "ui.json", "ui")
    assert load_workflow(str(tmp_path / "api.json")).kind == "api"
    assert detect_kind([]) is None and detect_kind({}) is None


def test_common_wrappers_are_unwrapped():
    assert load_workflow({"prompt": API, "client_id": "x"}).kind == "api"
    assert load_workflow({"workflow": chain(), "output": {}}).kind == "ui"


def test_json_syntax_error_names_line_and_column(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{\n  "nodes": [\n    {"id": 1,}\n  ]\n}\n')
    with pytest.raises(ConfigError) as e:
        load_workflow(f)
    assert str(f) in e.value.message and "line 3 column" in e.value.message
    assert e.value.details[0].strip() == '{"id": 1,}' and e.value.details[1].strip() == "^"
    assert e.value.exit_code == 2


@pytest.mark.parametrize("content, says", [
    ("", "is empty"),
    ("[1, 2]", "not a ComfyUI workflow (found list)"),
    ('{"hello": "world"}', "not a ComfyUI workflow"),
    ('{"nodes": [{"id": 1}]}', "node #1 in \"nodes\" has no id or type"),
    ('{"nodes": [], "links": 3}', "\"links\" is not a list"),
    ('{"1": {"class_type": "X", "inputs": 5}}', "\"inputs\" is not an object"),
])
def test_junk_is_a_clear_config_error(tmp_path, content, says):
    f = tmp_path / "w.json"
    f.write_text(content)
    with pytest.raises(ConfigError) as e:
        load_workflow(f)
    assert says in e.value.message
    assert e.value.hint is None or "Workflow" in e.value.hint or "browser" in e.value.hint


def test_missing_file_folder_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_workflow(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="is a folder"):
        load_workflow(tmp_path)
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        load_workflow(tmp_path / "b.json")


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunk(k, b) for k, b in chunks)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_png_saved_by_comfyui_carries_its_workflow(tmp_path):
    f = tmp_path / "img.png"
    f.write_bytes(_png([(b"tEXt", b"prompt\0" + json.dumps(API).encode()),
                        (b"tEXt", b"workflow\0" + json.dumps(chain()).encode())]))
    assert load_workflow(f).kind == "ui"                     # the workflow wins over the prompt
    text = json.dumps({"nodes": [], "links": [], "extra": {"t": "caf\u00e9"}}).encode()
    f.write_bytes(_png([(b"iTXt", b"workflow\0\x01\0\0\0" + zlib.compress(text))]))
    assert png_text_chunks(f.read_bytes())["workflow"] == text.decode()
    f.write_bytes(_png([]))
    with pytest.raises(ConfigError, match="carries no ComfyUI workflow"):
        load_workflow(f)
