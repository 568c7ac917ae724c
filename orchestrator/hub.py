"""The Hugging Face Hub seam: the ONLY module that imports huggingface_hub.

It asks the Hub about one file (`file_info`: a HEAD on `/{repo}/resolve/{revision}/{file}`, which
gives the size, ETag, commit and download location), streams bytes into a caller's file from a
given offset (`fetch`: huggingface_hub's `http_get` with a `Range` header), and checks a token
(`whoami`). Every huggingface_hub / HTTP exception is turned into a `DownloadError` that says
what is wrong and what to do. The token is held privately and never appears in any message.

Why not `hf_hub_download`: in huggingface_hub 2.x it writes to a process-unique temp file that is
deleted when the download fails, so an interrupted 23 GB download restarts from zero. The
caller (`download.py`) keeps its own partial file and resumes it with `fetch(resume_size=...)`.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from orchestrator import __version__
from orchestrator.errors import DownloadError
from orchestrator.hftoken import Token, check_token, find_token, redact

DEFAULT_ENDPOINT = "https://huggingface.co"
PUBLIC_SITE = "https://huggingface.co"     # model cards and token settings live here, whatever the endpoint
TOKENS_URL = PUBLIC_SITE + "/settings/tokens"
LOGIN_HINT = f"create a read token at {TOKENS_URL} and run `hf auth login` (or `export HF_TOKEN=hf_...`)"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class HubUnreachable(DownloadError):
    """The Hub (or HF_ENDPOINT) could not be reached at all."""


class TransferInterrupted(HubUnreachable):
    """The connection dropped in the middle of a file: the bytes received are kept, a retry resumes."""


class EntryMissing(DownloadError):
    """The repo exists but the file is not in it (404 EntryNotFound)."""


def model_card_url(repo: str) -> str:
    """The public page where a gated model's licence is accepted."""
    return f"{PUBLIC_SITE}/{repo}"


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says about one file at one revision."""

    repo: str
    filename: str
    revision: str
    size: int | None
    etag: str
    commit: str
    url: str            # where the bytes are served (the CDN location for LFS files)

    @property
    def sha256(self) -> str | None:
        """The LFS SHA-256 (the Hub uses it as the ETag of LFS files); None for small git files."""
        return self.etag if _SHA256.match(self.etag) else None

    @property
    def git_sha1(self) -> str | None:
        """The git blob SHA-1 (the ETag of files stored in git itself, e.g. tokenizer JSON)."""
        return self.etag if _SHA1.match(self.etag) else None


@dataclass(frozen=True)
class Hub:
    """A Hub endpoint plus the caller's token. Build with `Hub.from_env()`."""

    endpoint: str = DEFAULT_ENDPOINT
    token_source: str | None = None         # "HF_TOKEN" | "--token" | "the token file PATH" | None (no token)
    timeout: float = 10.0
    _token: str | None = field(default=None, repr=False)
    token_warnings: tuple[str, ...] = ()  # e.g. whitespace removed around the token (names the source only)

    @classmethod
    def from_env(cls, endpoint: str | None = None, *, timeout: float = 10.0, token: str | None = None) -> "Hub":
        """Endpoint from the argument or HF_ENDPOINT (read now, not at import); token from `token` (--token),
        HF_TOKEN or huggingface_hub's saved login, checked first (ConfigError naming the source when malformed)."""
        endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        found = _find_token(token, official_hub=_origin(endpoint) == _origin(DEFAULT_ENDPOINT))
        if found.value is None:
            return cls(endpoint=endpoint, timeout=timeout, token_warnings=found.warnings)
        return cls(endpoint=endpoint, token_source=found.source, timeout=timeout, _token=found.value,
                   token_warnings=found.warnings)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    # -- queries ---------------------------------------------------------------------------------
    def file_info(self, repo: str, filename: str, *, revision: str = "main", gated: bool = False) -> RemoteFile:
        """HEAD one file: size, ETag, commit and download URL; raises DownloadError with a fix."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo, filename, revision=revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self._token or False, timeout=self.timeout,
                                        library_name="flux-orchestrator", library_version=__version__,
                                        endpoint=self.endpoint)
        except Exception as e:
            raise self._translate(e, repo, filename, gated=gated) from None
        if not meta.commit_hash or not meta.etag:
            raise DownloadError(
                f"{self.endpoint} answered for {repo}/{filename} without the Hub's X-Repo-Commit/ETag headers",
                hint="HF_ENDPOINT must point to a Hugging Face Hub (or a mirror that speaks its protocol)")
        return RemoteFile(repo=repo, filename=filename, revision=revision, size=meta.size, etag=meta.etag,
                          commit=meta.commit_hash, url=meta.location)

    def fetch(self, remote: RemoteFile, sink: BinaryIO, *, resume_size: int = 0) -> None:
        """Stream `remote` into `sink` from byte `resume_size` (HTTP Range); `sink` already holds
        the first `resume_size` bytes. Local write errors (ENOSPC, ...) propagate unchanged."""
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers(token=self._token or False, library_name="flux-orchestrator",
                                   library_version=__version__)
        if _origin(remote.url) != _origin(self.endpoint):
            headers.pop("authorization", None)  # a signed CDN URL: the token must not leave the Hub
        kwargs: dict[str, Any] = {"resume_size": resume_size, "headers": headers, "expected_size": remote.size,
                                  "displayed_filename": remote.filename}
        if "tqdm_class" in inspect.signature(http_get).parameters:
            kwargs["tqdm_class"] = _NoBar  # our own progress line replaces huggingface_hub's bar
        try:
            http_get(remote.url, sink, **kwargs)
        except OSError as e:
            if e.errno is not None:
                raise  # the local disk failed us: the caller knows which file and what to keep
            if type(e).__module__.startswith("huggingface_hub"):
                raise self._translate(e, remote.repo, remote.filename) from None
            raise TransferInterrupted(f"the download of {remote.filename} from {remote.repo} was cut short: {e}",
                                      hint="run the same command again: it resumes where it stopped") from None
        except Exception as e:
            raise self._translate(e, remote.repo, remote.filename, during_transfer=True) from None

    def whoami(self) -> str:
        """The account name behind the token; DownloadError when there is none or it is refused."""
        from huggingface_hub import HfApi

        if self._token is None:
            raise DownloadError("no Hugging Face token found (neither HF_TOKEN nor a saved login)",
                                hint=LOGIN_HINT)
        try:
            info = HfApi(endpoint=self.endpoint, library_name="flux-orchestrator",
                         library_version=__version__).whoami(token=self._token)
        except Exception as e:
            raise self._translate(e, None, None) from None
        return str(info.get("name") or "?")

    # -- errors ----------------------------------------------------------------------------------
    def _translate(self, e: Exception, repo: str | None, filename: str | None, *, gated: bool = False,
                   during_transfer: bool = False) -> DownloadError:
        from huggingface_hub import errors as hf

        what = f"{repo}/{filename}" if repo and filename else (repo or "the Hub")
        status = getattr(getattr(e, "response", None), "status_code", None)
        server = _server_message(e)
        details = [f"the Hub said: {server}"] if server else []
        token_from = f"the token from {self.token_source}" if self.token_source else "the token"

        if isinstance(e, hf.OfflineModeIsEnabled):
            return HubUnreachable("HF_HUB_OFFLINE is set, so huggingface_hub will not go online",
                                  hint="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to download")
        if isinstance(e, hf.GatedRepoError) or (gated and isinstance(e, hf.RepositoryNotFoundError)
                                                and self._token is None):
            return self._gated_error(repo, status, token_from, details)
        if status == 401 and not isinstance(e, hf.RepositoryNotFoundError):
            if self._token is None:
                return DownloadError(f"the Hub asks for a token for {what} (401)", hint=LOGIN_HINT, details=details)
            return DownloadError(f"{token_from} was rejected by the Hub (401 invalid credentials)",
                                 hint="the token may be revoked or mistyped: create a read token at "
                                      f"{TOKENS_URL}, then `hf auth login --force` (or `export HF_TOKEN=hf_...`)",
                                 details=details)
        if isinstance(e, hf.EntryNotFoundError):
            return EntryMissing(f"{filename} is not in {repo} on {self.endpoint} (404)",
                                 hint=f"the file may have been renamed upstream: see {PUBLIC_SITE}/{repo}/tree/main "
                                      "and update flux-orchestrator", details=details)
        if isinstance(e, hf.RevisionNotFoundError):
            return DownloadError(f"revision not found for {repo} (404)", details=details)
        if isinstance(e, hf.RepositoryNotFoundError):
            return DownloadError(f"repository {repo} was not found on {self.endpoint}",
                                 hint="check HF_ENDPOINT if you use a mirror; a private repo needs a token "
                                      "with access", details=details)
        if status is not None:
            return DownloadError(f"the Hub answered {status} for {what}", hint=_status_hint(status), details=details)
        if _is_network_error(e):
            where = self.endpoint + (" (from HF_ENDPOINT)" if os.environ.get("HF_ENDPOINT") else "")
            if during_transfer:
                return TransferInterrupted(f"lost the connection while downloading {what}: {_short(e)}",
                                           hint="run the same command again: it resumes from the bytes already "
                                                "on disk")
            return HubUnreachable(f"cannot reach the Hugging Face Hub at {where}: {_short(e)}",
                                  hint="check your internet connection, proxy (HTTPS_PROXY) and HF_ENDPOINT, "
                                       "then run again")
        return DownloadError(f"downloading {what} failed: {type(e).__name__}: {_short(e)}",
                             hint="run again with --debug to see the full error")

    def _gated_error(self, repo: str | None, status: int | None, token_from: str,
                     details: list[str]) -> DownloadError:
        """No token, a token not accepted, or an account without access to a gated model."""
        card = model_card_url(repo or "")
        if self._token is None:
            return DownloadError(f"{repo} is a gated model and no Hugging Face token was found",
                                 hint=f"accept the licence at {card} while logged in, then {LOGIN_HINT}",
                                 details=details)
        if status == 401:
            return DownloadError(f"{token_from} was not accepted for the gated model {repo} (401)",
                                 hint=f"check the token ({TOKENS_URL}), and that the licence is accepted "
                                      f"at {card}", details=details)
        return DownloadError(
            f"your Hugging Face account has not been granted access to the gated model {repo} (403)",
            hint=f"open {card}, log in with the account of {token_from}, accept the licence, then run "
                 f"again (access to FLUX.1-dev is granted at once)", details=details)


class _NoBar:
    """A do-nothing progress bar handed to huggingface_hub (we draw our own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> bool:
        return False


def _find_token(explicit: str | None, *, official_hub: bool) -> Token:
    """--token, HF_TOKEN, the token file (checked by hftoken), then huggingface_hub's other sources
    (OIDC in CI, a Colab secret), checked the same way; a Token with value None when there is none."""
    found = find_token(explicit, official_hub=official_hub) or Token(None, None)
    if found.value is not None:
        return found
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # a broken login file or OIDC set-up: behave as if not logged in
        token = None
    if not token:
        return found
    value, warnings = check_token(token, "huggingface_hub's login (OIDC or a Colab secret)", official_hub=official_hub)
    return Token(value, "huggingface_hub's login", found.warnings + warnings)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _server_message(e: Exception) -> str | None:
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    message = headers.get("X-Error-Message") if headers is not None else None
    return message or getattr(e, "server_message", None) or None


def _is_network_error(e: BaseException) -> bool:
    names = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "TransportError", "ReadError",
             "ReadTimeout", "RemoteProtocolError", "ProxyError", "ConnectionError"}
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(cls.__name__ in names for cls in type(e).__mro__) or isinstance(e, ConnectionError):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


def _short(e: BaseException, limit: int = 200) -> str:
    text = redact(" ".join(str(e).split())) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_hint(status: int) -> str:
    """The next step for an HTTP error status of the Hub."""
    if status == 429:
        return "the Hub is rate-limiting this machine: wait a few minutes and run again"
    if status >= 500:
        return "the Hub is having trouble: run again later (completed files are kept)"
    return "run again; if it persists, check your network, proxy and HF_ENDPOINT"
