"""sd-scripts output parsing: captured-style logs written from the format facts (kohya README §3)."""

from __future__ import annotations

import pytest

from orchestrator.train import logparse as lp
from orchestrator.train.logparse import split_lines

# What a playbook-like single-GPU run prints (stderr rich lines at 80 columns, stdout prints, tqdm with \r).
RUN_LOG = (
    "2026-11-26 07:15:01 INFO     Loading dataset config from /run/data.toml        train_network.py:341\n"
    "                    INFO     [Dataset 0]                                        config_util.py:580\n"
    "                    INFO     found directory /data/flux_data/tjtoy contains 6   train_util.py:2010\n"
    "                             image files\n"
    "                    INFO     20 train images with repeats.                      train_util.py:2054\n"
    "                    INFO     preparing accelerator                             train_network.py:404\n"
    "accelerator device: cuda:0\n"
    "2026-11-26 07:15:03 INFO     Building Flux model dev from BFL checkpoint          flux_utils.py:152\n"
    "2026-11-26 07:15:09 INFO     Loaded Flux: <All keys matched successfully>         flux_utils.py:171\n"
    "2026-11-26 07:15:20 INFO     caching latents with caching strategy.               train_util.py:1097\n"
    "                    INFO     caching latents...                                   train_util.py:1146\n"
    "\r  0%|          | 0/13 [00:00<?, ?it/s]\r 46%|████▌     | 6/13 [00:02<00:02,  2.91it/s]"
    "\r100%|██████████| 13/13 [00:05<00:00,  2.60it/s]\n"
    "2026-11-26 07:15:26 INFO     caching Text Encoder outputs with caching strategy.  train_util.py:1263\n"
    "\r100%|██████████| 13/13 [00:09<00:00,  1.40it/s]\n"
    "import network module: networks.lora_flux\n"
    "2026-11-26 07:15:40 INFO     create LoRA network. base dim (rank): 256, alpha: 256.0  lora_flux.py:594\n"
    "prepare optimizer, data loader etc.\n"
    "override steps. steps for 100 epochs is / 指定エポックまでのステップ数: 500\n"
    "running training / 学習開始\n"
    "  num train images * repeats / 学習画像の数×繰り返し回数: 20\n"
    "  num reg images / 正則化画像の数: 0\n"
    "  num batches per epoch / 1epochのバッチ数: 20\n"
    "  num epochs / epoch数: 100\n"
    "  batch size per device / バッチサイズ: 1\n"
    "  gradient accumulation steps / 勾配を合計するステップ数 = 4\n"
    "  total optimization steps / 学習ステップ数: 500\n"
    "\rsteps:   0%|          | 0/500 [00:00<?, ?it/s]\n"
    "\nepoch 1/100\n\n"
    "\rsteps:   0%|          | 1/500 [00:15<2:04:35, 15.02s/it, avr_loss=0.412]"
    "\rsteps:   0%|          | 2/500 [00:18<1:15:00,  9.04s/it, avr_loss=0.398]"
    "\rsteps:  10%|█         | 50/500 [12:31<1:52:40, 15.02s/it, avr_loss=0.351]\n"
    "\nsaving checkpoint: /run/output/flux_dreambooth-000025.safetensors\n"
    "2026-11-26 07:30:00 INFO     saving state at epoch 25                             train_util.py:4650\n"
    "2026-11-26 07:30:05 INFO     generating sample images at step / サンプル画像生成 ステップ: 125  train_util.py:6562\n"
    "\rsteps: 100%|██████████| 500/500 [1:52:40<00:00,  2.10it/s, avr_loss=0.2]\n"
    "\nsaving checkpoint: /run/output/flux_dreambooth.safetensors\n"
    "                    INFO     saving last state.                                  train_util.py:4700\n"
    "                    INFO     model saved.                                      train_network.py:1500\n"
)


def events_of(text: str) -> list[lp.Event]:
    return lp.parse_lines(lp.split_output(text))


def test_a_whole_run_becomes_phases_info_steps_epochs_saves_and_the_end():
    events = events_of(RUN_LOG)
    phases = [e.phase for e in events if isinstance(e, lp.PhaseChanged)]
    assert phases == ["loading", "caching latents", "caching text", "training", "sampling", "training"]
    info = [e for e in events if isinstance(e, lp.TrainingInfo)]
    assert info == [lp.TrainingInfo(images=20, reg_images=0, batches_per_epoch=20, epochs=100, batch_size=1,
                                    grad_accum=4, total_steps=500)]
    steps = [e for e in events if isinstance(e, lp.StepProgress)]
    assert [(s.step, s.total, s.loss) for s in steps] == [(0, 500, None), (1, 500, 0.412), (2, 500, 0.398),
                                                          (50, 500, 0.351), (500, 500, 0.2)]
    assert steps[3].seconds_per_step == pytest.approx(15.02)
    assert steps[3].eta == 1 * 3600 + 52 * 60 + 40 and steps[3].elapsed == 12 * 60 + 31
    assert steps[4].seconds_per_step == pytest.approx(1 / 2.10)   # it/s turned into s/it
    assert steps[0].eta is None and steps[0].seconds_per_step is None
    assert [e for e in events if isinstance(e, lp.EpochStarted)] == [lp.EpochStarted(1, 100)]
    assert [e.path for e in events if isinstance(e, lp.CheckpointSaved)] == [
        "/run/output/flux_dreambooth-000025.safetensors", "/run/output/flux_dreambooth.safetensors"]
    assert [e.label for e in events if isinstance(e, lp.StateSaved)] == ["epoch 25", "last"]
    assert [e.step for e in events if isinstance(e, lp.SampleStarted)] == [125]
    assert isinstance(events[-1], lp.Finished)
    assert not [e for e in events if isinstance(e, lp.TrainerError)]


def test_caching_bars_report_their_phase():
    cache = [e for e in events_of(RUN_LOG) if isinstance(e, lp.CacheProgress)]
    assert [(c.phase, c.done, c.total) for c in cache] == [
        ("caching latents", 0, 13), ("caching latents", 6, 13), ("caching latents", 13, 13), ("caching text", 13, 13)]


def test_a_log_line_glued_to_a_redrawn_bar_is_not_lost():
    line = ("steps:  50%|#         | 6/12 [00:06<00:06,  1.00s/it, avr_loss=0.3125]2026-11-26 05:17:43 INFO     "
            "saving state at epoch 2")
    events = lp.LogParser().feed(line)
    assert [type(e) for e in events] == [lp.PhaseChanged, lp.StepProgress, lp.StateSaved]


@pytest.mark.parametrize("text,kind", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 23.55 GiB",
     "cuda_oom"),
    ("subprocess.CalledProcessError: Command '['/usr/bin/python', 'flux_train_network.py']' died with "
     "<Signals.SIGKILL: 9>.", "host_oom"),
    ("flux_train_network.py: error: unrecognized arguments: --learning_rat=1", "argparse"),
    ("flux_train_network.py: error: argument --network_dim: invalid int value: 'x'", "argparse"),
    ("voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['x']", "config"),
    ("2026-11-26 07:15:01 ERROR    Invalid user config / 不正なユーザー設定です          config_util.py:370", "config"),
    ("AssertionError: when caching latents, either color_aug or random_crop cannot be used", "assertion"),
    ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "child_failed"),
    ("2026-11-26 07:15:01 ERROR    No data found. Please verify arguments (train_data_dir must be the parent of "
     "folders with images)", "no_data"),
])
def test_failure_signatures_are_recognised(text, kind):
    errors = [e for e in lp.LogParser().feed(text) if isinstance(e, lp.TrainerError)]
    assert [e.kind for e in errors] == [kind]


def test_a_traceback_yields_its_exception_line_but_the_wrapper_is_ignored():
    text = ("Traceback (most recent call last):\n  File \"/opt/sd-scripts/train_network.py\", line 9, in train\n"
            "ValueError: bad value\n"
            "subprocess.CalledProcessError: Command '['python']' returned non-zero exit status 1.\n")
    errors = [e for e in events_of(text) if isinstance(e, lp.TrainerError)]
    assert [(e.kind, e.message) for e in errors] == [("exception", "ValueError: bad value")]


def test_failure_cause_prefers_the_specific_signature():
    errors = [lp.TrainerError("child_failed", "ChildFailedError"), lp.TrainerError("exception", "RuntimeError: x"),
              lp.TrainerError("cuda_oom", "CUDA out of memory")]
    assert lp.failure_cause(errors).kind == "cuda_oom"
    assert lp.failure_cause([]) is None


def test_plain_lines_produce_nothing_and_a_traceback_alone_is_no_error():
    parser = lp.LogParser()
    for line in ["", "   ", "prepare optimizer, data loader etc.", "Traceback (most recent call last):",
                 "use Prodigy optimizer | {'decouple': True}"]:
        assert parser.feed(line) == []


def test_parse_clock():
    assert lp.parse_clock("12:31") == 751
    assert lp.parse_clock("1:52:40") == 6760
    assert lp.parse_clock("?") is None


def test_split_lines_handles_cr_lf_across_chunks_and_split_utf8():
    chunks = [b"steps: 1\r", b"\nepoch 1/2\r", b"steps: 2\n\n\xe5\xad", b"\xa6\xe7\xbf\x92\r", b"tail"]
    assert list(split_lines(chunks)) == ["steps: 1", "epoch 1/2", "steps: 2", "", "学習", "tail"]


def test_sampling_ends_when_the_loop_prints_again():
    text = ("\rsteps: 100%|#| 12/12 [00:12<00:00,  1.00s/it, avr_loss=0.2]\n"
            "INFO     generating sample images at step / サンプル画像生成 ステップ: 12\n"
            "INFO     prompt: a tjtoy toy\n"
            "\nsaving checkpoint: /run/output/toy.safetensors\n")
    phases = [e.phase for e in events_of(text) if isinstance(e, lp.PhaseChanged)]
    assert phases == ["training", "sampling", "training"]


def test_the_real_trainer_output_from_an_h200_run_gives_every_training_field():
    """sd-scripts 48d368fa's own output (captured on an H200 with the GPU kit, random weights): its
    'running training' block has a 'num validation images' line between ours, which used to end the
    block after the first key (the progress line said 'None optimizer steps (None epochs ...')."""
    from pathlib import Path

    from orchestrator.train.logparse import CheckpointSaved, StepProgress, TrainingInfo, parse_lines, split_output

    text = (Path(__file__).parent / "fixtures" / "sdscripts_48d368fa_h200_train.log").read_text()
    events = parse_lines(split_output(text))
    infos = [e for e in events if isinstance(e, TrainingInfo)]
    assert infos == [TrainingInfo(images=13, reg_images=0, batches_per_epoch=13, epochs=2, batch_size=1,
                                  grad_accum=1, total_steps=26)]
    steps = [e for e in events if isinstance(e, StepProgress)]
    assert steps[-1].step == steps[-1].total == 26 and steps[-1].seconds_per_step == 1.32
    assert [Path(e.path).name for e in events if isinstance(e, CheckpointSaved)] == [
        "bench_default_1796417901-000001.safetensors", "bench_default_1796417901.safetensors"]
