"""Our exception tree. Library code raises these; only the CLI turns them into output.

    OrchestratorError(message, hint, details)      exit 1 unless a subclass says otherwise
    ├── UsageError                                 exit 2: bad command line or arguments
    ├── ConfigError                                exit 2: a config / job / workflow file is wrong
    │   └── DatasetError                           exit 2: the dataset or data.toml is wrong
    ├── RuntimeUnavailable                         exit 1: a runtime's backend cannot be reached
    ├── DockerError                                exit 1: the engine refused or failed
    │   └── DockerUnavailable                      exit 1: no engine reachable (also a RuntimeUnavailable)
    ├── DependencyMissing                          exit 1: a Python package we need is not installed
    ├── DownloadError                              exit 1: the Hub or the disk failed us
    ├── TrainingFailed                             exit 1: the trainer exited badly (evidence: log tail)
    ├── LockTimeout                                exit 1: another command holds a project file's lock
    └── ComfyError                                 exit 1
        ├── ComfyUnavailable                       exit 1: no server at the URL
        ├── ComfyRejected                          exit 2: the server refused the prompt (node errors)
        ├── ComfyFailed                            exit 1: the prompt failed while executing
        └── ComfyInterrupted                       exit 1: somebody interrupted the prompt

Every error carries a one-line `message` (what is wrong), an optional `hint` (the next step)
and `details` (evidence lines: node errors, log tail, file:line).
"""

from __future__ import annotations

from collections.abc import Iterable


class OrchestratorError(Exception):
    """Base of every expected failure; rendered as `error:` / details / `hint:` by the CLI."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details)

    def __str__(self) -> str:
        return self.message


class UsageError(OrchestratorError):
    """The command line is wrong."""

    exit_code = 2


class ConfigError(OrchestratorError):
    """A file the user wrote (train.yaml, job file, workflow, data.toml) is wrong."""

    exit_code = 2


class DatasetError(ConfigError):
    """The dataset folders or data.toml would make the trainer fail or silently skip data."""


class DependencyMissing(OrchestratorError):
    """A Python package flux-orchestrator needs is not installed (or cannot be imported)."""


class RuntimeUnavailable(OrchestratorError):
    """A runtime's backend (the Docker engine, a cluster head) cannot be reached from here."""


class DockerError(OrchestratorError):
    """The Docker engine refused or failed an operation."""


class DockerUnavailable(DockerError, RuntimeUnavailable):
    """No Docker engine can be reached."""


class DownloadError(OrchestratorError):
    """A model or tokenizer could not be downloaded or verified."""


class TrainingFailed(OrchestratorError):
    """The trainer exited with an error, or without writing its LoRA."""


class LockTimeout(OrchestratorError):
    """Another command kept a project file locked for longer than we wait."""


class ComfyError(OrchestratorError):
    """Something went wrong talking to ComfyUI."""


class ComfyUnavailable(ComfyError):
    """No ComfyUI server answers at the URL."""


class ComfyRejected(ComfyError):
    """ComfyUI refused the prompt at validation (HTTP 400 with node errors)."""

    exit_code = 2


class ComfyFailed(ComfyError):
    """The prompt was accepted but failed while executing."""


class ComfyInterrupted(ComfyError):
    """The prompt was interrupted before it finished."""
