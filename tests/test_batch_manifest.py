"""The manifest: state machine, crash tolerance, one writer at a time."""

from __future__ import annotations

import json

import pytest

from orchestrator.batch.manifest import Manifest, ManifestError, read_manifest


def test_records_fold_into_the_latest_state(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.event("run", total=1)
        m.record("k1", "pending", name="toy-1", settings={"seed": 1})
        m.record("k1", "queued", server="http://a", prompt_id="p1")
        m.record("k1", "pending", reason="http://a is down")
        m.record("k1", "queued", server="http://b", prompt_id="p2")
        m.record("k1", "done", server="http://b", prompt_id="p2", files=["toy-1.png"])
    jobs, events = read_manifest(path)
    rec = jobs["k1"]
    assert (rec.state, rec.server, rec.prompt_id, rec.files, rec.attempts) == ("done", "http://b", "p2", ("toy-1.png",), 2)
    assert rec.name == "toy-1" and rec.settings == {"seed": 1}
    assert [e["event"] for e in events] == ["run"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


@pytest.mark.parametrize("steps", [["queued"], ["pending", "done"], ["pending", "queued", "done", "queued"]])
def test_illegal_transitions_are_refused_and_not_written(tmp_path, steps):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        with pytest.raises(ManifestError):
            for state in steps:
                m.record("k", state, server="s", prompt_id="p")
    lines = path.read_text().splitlines()
    assert len(lines) == len(steps) - 1


def test_a_torn_last_line_is_ignored_and_the_next_record_starts_clean(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.record("k", "pending", name="x")
        m.record("k", "queued", server="s", prompt_id="p")
    with open(path, "ab") as f:
        f.write(b'{"t": 1, "key": "k", "state": "do')          # power cut mid-write
    jobs, _ = read_manifest(path)
    assert jobs["k"].state == "queued"
    with Manifest(path) as m:
        assert m.get("k").state == "queued"
        m.record("k", "done", server="s", prompt_id="p", files=["x.png"])
    jobs, _ = read_manifest(path)
    assert jobs["k"].state == "done"


def test_garbage_in_the_middle_is_an_error_with_the_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"key": "k", "state": "pending"}\nnot json\n{"key": "k", "state": "queued"}\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:2" in e.value.message


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path):
        with pytest.raises(ManifestError) as e:
            Manifest(path)
        assert "another `batch run`" in e.value.message
    Manifest(path).close()   # free again once the first one closed


def test_deferred_sync_writes_everything(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        with m.deferred_sync():
            for i in range(50):
                m.record(f"k{i}", "pending", name=f"n{i}")
    assert len(read_manifest(path)[0]) == 50
