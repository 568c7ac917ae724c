"""The Hugging Face token: where it comes from, checked before it is used, and never shown.

Sources, first found wins: `--token`, `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, the token file that
`hf auth login` writes (`HF_TOKEN_PATH`, default `$HF_HOME/token`). Surrounding whitespace (a
pasted newline) is removed with a warning naming the source; a control character, a space or a
non-ASCII character inside, or a value that is not a bearer token, is a ConfigError naming the
source. No message here or anywhere else contains the value: errors say where the token came
from and what kind of character is wrong, never which. `redact` is the CLI's last line of
defence: every value seen here is remembered and masked in whatever the CLI prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ConfigError, UsageError

MASK = "hf_***"
HF_PREFIX = "hf_"
TOKENS_URL = "https://huggingface.co/settings/tokens"
# RFC 6750 b64token: the only characters an HTTP `Authorization: Bearer` value may hold.
_BEARER = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_MIN_LENGTH = 8
_seen: set[str] = set()


@dataclass(frozen=True)
class Token:
    """A checked token and where it came from (value None: none found, only warnings); `repr` never shows it."""

    value: str | None = field(repr=False)
    source: str | None                   # e.g. "HF_TOKEN", "--token", "the token file /home/me/.cache/huggingface/token"
    warnings: tuple[str, ...] = ()       # e.g. "HF_TOKEN: surrounding whitespace removed"


def token_file(environ: Mapping[str, str] | None = None) -> Path:
    """The file `hf auth login` writes, as huggingface_hub finds it (read from the environment now)."""
    env = os.environ if environ is None else environ
    if env.get("HF_TOKEN_PATH"):
        return Path(env["HF_TOKEN_PATH"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home).expanduser() / "token"


def remember(raw: str | None) -> None:
    """Note a secret (and its whitespace-separated pieces) so `redact` masks it."""
    if not raw:
        return
    for piece in {raw, raw.strip(), *raw.split()}:
        if len(piece) >= _MIN_LENGTH:
            _seen.add(piece)


def redact(text: str) -> str:
    """`text` with every token value seen in this process replaced by a mask."""
    for secret in sorted(_seen, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
        for variant in (repr(secret)[1:-1], secret.encode("unicode_escape").decode("ascii", "replace")):
            if variant != secret and variant in text:
                text = text.replace(variant, MASK)
    return text


def check_token(raw: str, source: str, *, official_hub: bool) -> tuple[str, tuple[str, ...]]:
    """The usable token and warnings; ConfigError naming `source` (never the value) when it is malformed."""
    remember(raw)
    value = raw.strip()
    warnings: tuple[str, ...] = ()
    if value != raw:
        warnings = (f"{source}: removed whitespace around the token (a newline or spaces pasted with it)",)
    fix = _fix(source)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        kind = "a line break" if ("\n" in value or "\r" in value) else "a tab" if "\t" in value else \
            "a control character"
        raise ConfigError(f"{source}: the Hugging Face token contains {kind} inside it", hint=fix)
    if any(ord(c) > 127 for c in value):
        raise ConfigError(f"{source}: the Hugging Face token contains a non-ASCII character (a typographic quote, "
                          "a non-breaking space or a look-alike letter?)", hint=fix)
    if value.lower().startswith("bearer "):
        raise ConfigError(f"{source}: holds `Bearer ` and the token; give only the token (hf_...)", hint=fix)
    if " " in value:
        raise ConfigError(f"{source}: the Hugging Face token contains a space", hint=fix)
    if value[:1] in "\"'" and value[-1:] == value[:1]:
        raise ConfigError(f"{source}: the Hugging Face token is wrapped in quotes; give it without them", hint=fix)
    if not _BEARER.match(value) or len(value) < _MIN_LENGTH:
        raise ConfigError(f"{source}: this is not a Hugging Face token (tokens are {HF_PREFIX} followed by "
                          "letters and digits)", hint=fix)
    if official_hub and not value.startswith(HF_PREFIX):
        raise ConfigError(f"{source}: this is not a Hugging Face token (they start with {HF_PREFIX})", hint=fix)
    return value, warnings


def find_token(explicit: str | None = None, environ: Mapping[str, str] | None = None, *,
               official_hub: bool = True) -> Token | None:
    """The token to use, checked; None when there is none. ConfigError/UsageError for a malformed one."""
    env = os.environ if environ is None else environ
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        remember(env.get(name))
    if explicit is not None:
        if not explicit.strip():
            raise UsageError("--token is empty", hint="give the token (hf_...), or leave --token out to use HF_TOKEN "
                                                      "or `hf auth login`")
        return Token(*_checked(explicit, "--token", official_hub))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        raw = env.get(name)
        if raw is None:
            continue
        if not raw.strip():
            if raw:  # set to whitespace only: say so, then look further like huggingface_hub does
                ignored = (f"{name} holds only whitespace: ignored",)
                return _from_file(token_file(env), official_hub, ignored) or Token(None, name, ignored)
            continue
        return Token(*_checked(raw, name, official_hub))
    return _from_file(token_file(env), official_hub, ())


def _checked(raw: str, source: str, official_hub: bool) -> tuple[str, str, tuple[str, ...]]:
    value, warnings = check_token(raw, source, official_hub=official_hub)
    return value, source, warnings


def _from_file(path: Path, official_hub: bool, warnings: tuple[str, ...]) -> Token | None:
    try:
        raw = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not UTF-8 text", hint=_fix(f"the token file {path}")) from None
    except OSError as e:
        raise ConfigError(f"cannot read the token file {path}: {e.strerror or type(e).__name__}",
                          hint=f"check its owner and permissions (`ls -l {path}`), or use HF_TOKEN") from None
    if not raw.strip():
        return None
    value, source, more = _checked(raw, f"the token file {path}", official_hub)
    # `hf auth login` writes the token followed by nothing; a trailing newline from an editor is normal
    more = tuple(w for w in more if not raw.rstrip("\r\n") == raw.strip())
    return Token(value, source, warnings + more)


def _fix(source: str) -> str:
    if source == "--token":
        return f"copy the token again from {TOKENS_URL} and pass only it to --token"
    if source.startswith("the token file"):
        return f"run `hf auth login --force` to write it again (tokens: {TOKENS_URL})"
    return f"set it again with only the token, e.g. `export {source}=hf_...` (tokens: {TOKENS_URL})"
