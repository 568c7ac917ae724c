"""StatusLine: the live line on a terminal and milestone lines around it."""

from __future__ import annotations

import io

from orchestrator.progress import StatusLine


def test_milestone_redraws_the_newest_status_not_a_throttled_stale_one():
    out = io.StringIO()
    line = StatusLine(out, tty=True, fps=0.001)   # one draw, then every update is throttled
    line.update("loading models…")
    line.update("training · step 4/27")            # throttled: not drawn yet
    line.milestone("saved x.safetensors")
    text = out.getvalue()
    assert text.endswith("\rtraining · step 4/27")
    assert "saved x.safetensors\n" in text and text.count("loading models") == 1


def test_the_update_right_after_a_milestone_is_drawn_at_once():
    out = io.StringIO()
    line = StatusLine(out, tty=True, fps=0.001)
    line.update("loading models…")
    line.milestone("caching latents")              # a phase change: milestone first, then the new status
    line.update("caching latents…")
    assert out.getvalue().endswith("\rcaching latents…")


def test_no_live_line_after_close_and_nothing_live_without_a_terminal():
    out = io.StringIO()
    line = StatusLine(out, tty=True)
    line.update("step 1")
    line.close()
    line.milestone("done")
    assert out.getvalue().endswith("done\n")
    plain = io.StringIO()
    quiet = StatusLine(plain, tty=False)
    quiet.update("step 1")
    quiet.milestone("done")
    assert plain.getvalue() == "done\n"
