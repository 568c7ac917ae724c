"""A connection that drops mid-file is resumed by `download` itself, on every supported huggingface_hub
(some versions retry on their own, others do not), and a connection that keeps dropping ends in a clear
error after a bounded number of tries, with the bytes received kept for the next run."""

from __future__ import annotations

from orchestrator import models
from orchestrator.download import TRANSFER_TRIES
from tests.test_download import hub  # noqa: F401 (the local Hub fixture)


def test_a_connection_that_keeps_dropping_gives_up_after_the_tries_with_the_partial_kept(hub, run_cli,  # noqa: F811
                                                                                         project):
    def cut_every_time(name: str) -> None:
        if name == "clip_l.safetensors":
            hub.cut_after[name] = 1_000

    hub.before_body = cut_every_time
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1 and "Traceback" not in r.err
    assert "clip_l.safetensors" in r.err and "resume" in r.err
    for n in range(2, TRANSFER_TRIES + 1):                             # our own tries, whatever the hub does
        assert "resuming at" in r.err and f"(try {n} of {TRANSFER_TRIES})" in r.err
    assert len(hub.gets("/cdn/")) >= TRANSFER_TRIES
    assert not models.CLIP_L.path(project).exists()                  # nothing under the final name

