"""Events and their renderers: the live line on a terminal, milestone lines around it, JSON lines."""

from __future__ import annotations

import io
import json

from orchestrator.cli.render import JsonLines, LiveLine, PlainLog, make_display
from orchestrator.progress import Event, RecordingSink, Tee


def live(text: str, **kw) -> Event:
    return Event("train", "training", text, live=True, **kw)


def test_milestone_redraws_the_newest_status_not_a_throttled_stale_one():
    out = io.StringIO()
    line = LiveLine(out, fps=0.001)   # one draw, then every update is throttled
    line.emit(live("loading models…"))
    line.emit(live("training · step 4/27", step=4, total=27))            # throttled: not drawn yet
    line.emit(Event("train", "checkpoint", "saved x.safetensors"))
    text = out.getvalue()
    assert "saved x.safetensors\n" in text and text.count("loading models") == 1
    assert text.rstrip().endswith("training · step 4/27")                 # redrawn under the milestone


def test_the_update_right_after_a_milestone_is_drawn_at_once():
    out = io.StringIO()
    line = LiveLine(out, fps=0.001)
    line.emit(live("loading models…"))
    line.emit(Event("train", "caching", "caching latents"))   # a phase change: milestone first, then the status
    line.emit(live("caching latents…"))
    assert out.getvalue().endswith("caching latents…")


def test_a_total_draws_a_bar_and_close_erases_the_line():
    out = io.StringIO()
    line = LiveLine(out)
    line.emit(live("step 5/10", step=5, total=10))
    drawn = out.getvalue().rsplit("\r", 1)[-1]
    assert drawn.endswith(" step 5/10") and len(drawn) > len(" step 5/10") + 10   # the bar in front
    line.close()
    line.emit(Event("train", "end", "done"))
    assert out.getvalue().endswith("\rdone\n")


def test_without_a_terminal_only_milestones_with_a_message_are_written():
    plain = io.StringIO()
    log = PlainLog(plain)
    log.emit(live("step 1"))
    log.emit(Event("download", "start"))            # for scripts only: no line
    log.emit(Event("train", "end", "done"))
    assert plain.getvalue() == "done\n"
    assert isinstance(make_display(io.StringIO()), PlainLog)
    assert isinstance(make_display(io.StringIO(), tty=True), LiveLine)
    assert isinstance(make_display(io.StringIO(), json_lines=True, tty=True), JsonLines)


def test_json_lines_have_every_field_and_keep_milestones_while_throttling_live_events():
    out = io.StringIO()
    sink = JsonLines(out, fps=0.001)
    sink.emit(live("step 1/4", step=1, total=4, unit="step", rate=0.5, eta=6.0))
    sink.emit(live("step 2/4", step=2, total=4))                  # throttled
    sink.emit(Event("train", "checkpoint", "saved", files=("/x/a.safetensors",)))
    sink.emit(live("step 3/4", step=3, total=4))                  # right after a milestone: shown
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["message"] for d in docs] == ["step 1/4", "saved", "step 3/4"]
    assert set(docs[0]) == {"time", "kind", "phase", "live", "message", "step", "total", "unit", "rate", "eta",
                            "files"}
    first = docs[0]
    assert (first["step"], first["total"], first["rate"], first["eta"], first["live"]) == (1, 4, 0.5, 6.0, True)
    assert docs[1]["files"] == ["/x/a.safetensors"] and docs[1]["step"] is None and docs[1]["live"] is False
    assert docs[0]["time"].endswith("+00:00")


def test_tee_and_recording_sink():
    a, b = RecordingSink(), RecordingSink()
    tee = Tee([a, b])
    for e in (Event("batch", "start"), live("x"), live("y"), Event("batch", "end", "done")):
        tee.emit(e)
    assert a.phases() == ["start", "training", "end"] == b.phases()
    assert a.milestones == ["done"] and a.updates == ["x", "y"]


class Terminal(io.StringIO):
    """stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_cli_draws_a_live_line_and_prints_results_apart(project):
    from orchestrator.cli import main
    from tests.comfy_double import ComfyDouble

    out, err = io.StringIO(), Terminal()
    with ComfyDouble(steps=3) as d:
        code = main(["--project-dir", str(project.root), "generate", "a red fox", "--seed", "1", "--server", d.url],
                    stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    text = err.getvalue()
    assert "\r" in text and "image 1/1: " in text             # redrawn in place
    assert "image 1/1 done in" in text and text.endswith("\r")  # the milestone stays; the line is erased at the end
    assert out.getvalue().strip().endswith(".png") and "\r" not in out.getvalue()
