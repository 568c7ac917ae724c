"""Runtimes: where ComfyUI servers and trainings run. THE one place that maps a runtime name to code.

`REGISTRY` lists every runtime: its name, and the dotted paths of its `ServerRuntime` and/or
`TrainRuntime` classes (see `orchestrator.runtimes.base` for the interfaces and how to write one).
Classes are imported on first use, so `--help` and `--plan` do not load Docker or cluster clients.
Adding a runtime = one new module + one `Entry` line here.
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
    """One runtime: its name and where its implementations live ("module:Class", or None)."""

    name: str
    help: str
    server: str | None = None     # ServerRuntime implementation
    train: str | None = None      # TrainRuntime implementation


REGISTRY: tuple[Entry, ...] = (
    Entry("docker", "containers on this machine's Docker engine (the default)",
          server="orchestrator.runtimes.docker_comfyui:DockerServer",
          train="orchestrator.runtimes.docker_train:DockerTrainer"),
    Entry("local", "processes from a checkout on this machine (ComfyUI: --comfyui DIR; sd-scripts: --sd-scripts DIR)",
          server="orchestrator.runtimes.local_comfyui:LocalServerRuntime",
          train="orchestrator.runtimes.local_train:LocalTrainer"),
    Entry("ray", "ComfyUI workers as Ray actors on a Ray cluster (--address ADDR; needs the `ray` extra)",
          server="orchestrator.runtimes.ray:RayServerRuntime"),
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
    return {n: runtime_class(kind, n).SETTINGS for n in names(kind)}


def _make(kind: str, name: str, env: RuntimeEnv, settings: Mapping[str, Any] | None) -> Any:
    settings = dict(settings or {})
    check_settings(name, runtime_class(kind, name).SETTINGS, settings, settings_of(kind))
    return runtime_class(kind, name)(env, settings)


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
