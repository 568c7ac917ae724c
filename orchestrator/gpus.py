"""`--gpus`: the one parser of a GPU selection, shared by `train`, `comfyui up` and container specs.

Grammar: `all` | `none` | a count `N` (>= 1) | device ids `0,1` (a lone id is `device=1` or `1,`, since
`1` is a count) | `device=0,2` | `GPU-<uuid>` / `MIG-<uuid>` ids.
"""

from __future__ import annotations

from dataclasses import dataclass

HINT = ("e.g. --gpus all, --gpus 0,1, --gpus device=0 (GPU 0 alone), a count like --gpus 2, "
        "or --gpus none (no GPU)")


@dataclass(frozen=True)
class GpuSelection:
    """A parsed `--gpus` value: exactly one of all / none / count / ids."""

    all: bool = False
    none: bool = False
    count: int | None = None
    ids: tuple[str, ...] = ()

    @property
    def engine_value(self) -> str | None:
        """The selection in the engine's grammar: 'all', '2', '0,1', '3,' (a lone id); None for none."""
        if self.none:
            return None
        if self.all:
            return "all"
        if self.count is not None:
            return str(self.count)
        return ",".join(self.ids) + ("," if len(self.ids) == 1 else "")

    def device_request(self) -> dict[str, object]:
        """Docker DeviceRequest fields: count -1 (all), count N, or device_ids."""
        if self.all:
            return {"count": -1}
        if self.count is not None:
            return {"count": self.count}
        if self.ids:
            return {"device_ids": list(self.ids)}
        raise ValueError("--gpus none requests no device")

    def processes(self, visible: int | None) -> int:
        """How many GPUs that is (all: the visible ones, at least 1; none: 1 process on the CPU)."""
        if self.all:
            return max(1, visible or 1)
        if self.count is not None:
            return self.count
        return len(self.ids) or 1


def parse_gpus(value: str) -> GpuSelection:
    """Parse a `--gpus` value; ValueError (with what is accepted) for anything else."""
    text = value.strip()
    if text == "all":
        return GpuSelection(all=True)
    if text == "none":
        return GpuSelection(none=True)
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"invalid GPU selection {value!r}: a count is at least 1 (no GPU: none)")
        return GpuSelection(count=int(text))
    device = text.startswith("device=")
    body = text[len("device="):] if device else text
    if not (device or "," in body or body.startswith(("GPU-", "MIG-"))):
        raise ValueError(f"invalid GPU selection {value!r}: use 'all', a count like 2, ids like 0,1 "
                         "(one id: device=1), or 'none'")
    ids = tuple(g.strip() for g in body.split(",") if g.strip())
    bad = [g for g in ids if not (g.isdigit() or g.startswith(("GPU-", "MIG-")))]
    if not ids or bad:
        raise ValueError(f"invalid GPU selection {value!r}: ids are numbers like 0,1 (or GPU-<uuid>)")
    return GpuSelection(ids=ids)
