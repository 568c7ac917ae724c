"""Runtimes: where ComfyUI servers and trainings run. THE one place that maps a runtime name to code.

`REGISTRY` lists every runtime: its name, and the dotted paths of its `ServerRuntime` and/or
`TrainRuntime` classes (see `orchestrator.runtimes.base` for the interfaces and how to write one).
Classes are imported on first use, so `--help` loads none of them (their options are declared in
the `Entry`). Adding a runtime = one new module + one `Entry` line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.runtimes.base import (LogLine, RuntimeEnv, RuntimeSetting, RuntimeUnavailable, ServerInfo,
                                        ServerRequest, ServerRuntime, ServerUp, TrainerFiles, TrainJob,
                                        TrainRuntime, check_settings)


@dataclass(frozen=True)
class Entry:
    """One runtime: its name, where its implementations live ("module:Class", or None) and the options
    only it has (declared here, so the CLI builds its flags without importing the runtime)."""

    name: str
    help: str
    server: str | None = None     # ServerRuntime implementation
    train: str | None = None      # TrainRuntime implementation
    server_settings: tuple[RuntimeSetting, ...] = ()
    train_settings: tuple[RuntimeSetting, ...] = ()


REGISTRY: tuple[Entry, ...] = (
    Entry("docker", "containers on this machine's Docker engine (the default)",
          server="orchestrator.runtimes.docker_comfyui:DockerServer",
          train="orchestrator.runtimes.docker_train:DockerTrainer",
          server_settings=(
              RuntimeSetting("image", "advanced: use a pre-built image instead of ours", metavar="TAG"),
              RuntimeSetting("rebuild", "rebuild the image even if it exists", kind="flag"),
              RuntimeSetting("no_build", "fail instead of building a missing image", kind="flag")),
          train_settings=(
              RuntimeSetting("image", "use this (local) training image instead of flux-train built from "
                             "Dockerfile.train", metavar="TAG"),
              RuntimeSetting("rebuild", "rebuild the training image first", kind="flag"))),
    Entry("local", "processes from a checkout on this machine (ComfyUI: --comfyui DIR; sd-scripts: --sd-scripts DIR)",
          server="orchestrator.runtimes.local_comfyui:LocalServerRuntime",
          train="orchestrator.runtimes.local_train:LocalTrainer",
          server_settings=(
              RuntimeSetting("comfyui", "ComfyUI checkout for --runtime local", kind="path", metavar="DIR"),
              RuntimeSetting("python", "Python interpreter for --runtime local (default: this one)", metavar="PY")),
          train_settings=(
              RuntimeSetting("sd_scripts", "sd-scripts checkout (local runtime)", kind="path", metavar="DIR"),
              RuntimeSetting("python", "python of the sd-scripts environment (local runtime)", metavar="PY"))),
    Entry("ray", "ComfyUI workers as Ray actors on a Ray cluster (--address ADDR; needs the `ray` extra)",
          server="orchestrator.runtimes.ray:RayServerRuntime",
          server_settings=(
              RuntimeSetting("address", "Ray cluster address, e.g. HEAD:6379 (default: $RAY_ADDRESS, else the one "
                                        "`comfyui up --runtime ray` recorded)", metavar="ADDR"),
              RuntimeSetting("namespace", "Ray namespace of the workers (default flux-orchestrator)", metavar="NS"),
              RuntimeSetting("worker_gpus", "GPUs per Ray worker (default 1; 0 = CPU workers)", metavar="N"),
              RuntimeSetting("worker_cpus", "CPUs per Ray worker (default 1)", metavar="N"),
              RuntimeSetting("comfyui", "ComfyUI checkout (--runtime ray: the same path on every node)", kind="path",
                             metavar="DIR"),
              RuntimeSetting("python", "Python of that checkout (default: the worker's own)", metavar="PY"),
              RuntimeSetting("models", "models folder every Ray node sees at this path (default: this project's "
                                       "models/)", kind="path", metavar="DIR"),
              RuntimeSetting("work_dir", "where Ray workers keep their ComfyUI state on their node "
                                         "(default /tmp/flux-orchestrator-ray)", kind="path", metavar="DIR"))),
)
DEFAULT = REGISTRY[0].name


def names(kind: str) -> tuple[str, ...]:
    """Names of the runtimes that implement `kind` ("server" or "train"), in registry order."""
    return tuple(e.name for e in REGISTRY if getattr(e, kind) is not None)


def runtime_class(kind: str, name: str) -> type[Any]:
    """The implementation class of runtime `name` for `kind`; UsageError naming the choices."""
    entry = next((e for e in REGISTRY if e.name == name), None)
    target = getattr(entry, kind) if entry is not None else None
    if target is None:
        what = "ComfyUI servers" if kind == "server" else "training"
        raise UsageError(f"--runtime {name!r} cannot run {what}: choose {' or '.join(names(kind))}")
    module, _, cls = target.partition(":")
    return getattr(import_module(module), cls)


def settings_of(kind: str) -> dict[str, tuple[RuntimeSetting, ...]]:
    """Each runtime's own options for `kind` (the CLI adds a flag for each)."""
    return {e.name: getattr(e, f"{kind}_settings") or getattr(runtime_class(kind, e.name), "SETTINGS", ())
            for e in REGISTRY if getattr(e, kind) is not None}


def _make(kind: str, name: str, env: RuntimeEnv, settings: Mapping[str, Any] | None) -> Any:
    cls = runtime_class(kind, name)
    settings = dict(settings or {})
    check_settings(name, settings_of(kind)[name], settings, settings_of(kind))
    return cls(env, settings)


def server_runtime(name: str, env: RuntimeEnv, settings: Mapping[str, Any] | None = None) -> ServerRuntime:
    """The ComfyUI server runtime `name`, built with `settings` (its own options; others are refused)."""
    return _make("server", name, env, settings)


def train_runtime(name: str, env: RuntimeEnv, settings: Mapping[str, Any] | None = None) -> TrainRuntime:
    """The training runtime `name`, built with `settings` (its own options; others are refused)."""
    return _make("train", name, env, settings)


def server_runtimes(env: RuntimeEnv) -> list[ServerRuntime]:
    """Every server runtime with default settings: what `comfyui status | logs | down` look through."""
    return [runtime_class("server", n)(env, {}) for n in names("server")]


__all__ = ["DEFAULT", "REGISTRY", "Entry", "LogLine", "RuntimeEnv", "RuntimeSetting", "RuntimeUnavailable",
           "ServerInfo", "ServerRequest", "ServerRuntime", "ServerUp", "TrainJob", "TrainRuntime", "TrainerFiles",
           "names", "runtime_class", "server_runtime", "server_runtimes", "settings_of", "train_runtime"]
