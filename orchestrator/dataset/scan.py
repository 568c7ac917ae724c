"""Reading concept folders: which files the trainer will pick up, and what each image really is.

Cheap by default: Pillow reads only headers (format, stored size, mode, EXIF orientation) and we
look at the file's last bytes for a missing end marker. `verify=True` decodes every image fully.
Near-duplicate hashes (dHash) decode a small draft of the image and are computed only on request.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from orchestrator.dataset.rules import (CACHE_NAMES, CACHE_SUFFIXES, CAPTION_EXTENSIONS, IMAGE_EXTENSIONS,
                                        UNSUPPORTED_IMAGE_EXTENSIONS)

ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_PNG_END = b"IEND\xaeB`\x82"
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageInfo:
    """One file with an image extension the trainer picks up, as far as we read it."""

    path: Path
    format: str | None = None
    size: tuple[int, int] | None = None      # stored pixels (w, h); the trainer ignores EXIF rotation
    mode: str | None = None
    bits: int = 8                            # bits per channel
    orientation: int = 1                     # EXIF orientation (1 = upright)
    has_alpha: bool = False
    error: str | None = None                 # not an image / truncated / undecodable
    error_code: str | None = None
    suspect: str | None = None               # looks damaged, needs --verify to be sure
    file_size: int = 0
    dhash: int | None = None

    @property
    def ok(self) -> bool:
        """The trainer can load it (as far as we checked)."""
        return self.error is None


@dataclass(frozen=True)
class FolderScan:
    """Every entry of a concept folder, sorted into what the trainer does with it."""

    folder: Path
    images: tuple[Path, ...]          # picked up by the trainer (lower- or upper-case extension)
    mixed_case: tuple[Path, ...]      # image extension in mixed case: the trainer skips these
    unsupported: tuple[Path, ...]     # image formats the trainer does not read (.gif, .heic, ...)
    captions: tuple[Path, ...]        # .txt / .caption / the configured caption extension
    caches: tuple[Path, ...]          # files sd-scripts writes itself (*_flux.npz, ...)
    subfolders: tuple[Path, ...]      # sub-folders holding files: ignored (the scan is flat)
    other: tuple[Path, ...]           # anything else


def is_picked_up(name: str) -> bool:
    """Whether sd-scripts' glob picks the file up: a known extension, all-lower or all-upper case."""
    ext = os.path.splitext(name)[1]
    return ext in IMAGE_EXTENSIONS or ext in tuple(e.upper() for e in IMAGE_EXTENSIONS)


def scan_folder(folder: Path, caption_extension: str = ".caption") -> FolderScan:
    """Sort the entries of `folder` (non-recursive, like the trainer; dot-files skipped like glob)."""
    images, mixed, unsupported, captions, caches, subs, other = [], [], [], [], [], [], []
    cap_exts = {e for e in (*CAPTION_EXTENSIONS, caption_extension.lower())}
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        p = Path(e.path)
        try:
            is_dir = e.is_dir()
        except OSError:  # a symlink loop: read_header reports the file
            is_dir = False
        if is_dir:
            if any(not n.startswith(".") for n in os.listdir(p)):
                subs.append(p)
            continue
        ext = os.path.splitext(e.name)[1]
        low = ext.lower()
        if is_picked_up(e.name):
            images.append(p)
        elif low in IMAGE_EXTENSIONS:
            mixed.append(p)
        elif low in UNSUPPORTED_IMAGE_EXTENSIONS:
            unsupported.append(p)
        elif e.name in CACHE_NAMES or e.name.endswith(CACHE_SUFFIXES) or low == ".npz":
            caches.append(p)
        elif low in cap_exts or e.name.endswith(caption_extension):
            captions.append(p)
        else:
            other.append(p)
    return FolderScan(folder, *(tuple(x) for x in (images, mixed, unsupported, captions, caches, subs, other)))


def read_header(path: Path) -> ImageInfo:
    """Format, size, mode, bit depth, alpha and EXIF orientation from the header; no full decode."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a pipe would block the open (here and in the trainer) forever
            return ImageInfo(path, error_code="unreadable",
                             error="is not a regular file (a pipe, socket or device): the trainer cannot read it")
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(max(0, size - 4096))
            tail = f.read()
            f.seek(0)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                # Pillow's WebP open decodes far more than the header: read the chunks ourselves
                webp = _webp_header(f, size)
                if webp is not None:
                    return _check_end(ImageInfo(path, format="WEBP", file_size=size, **webp), head, tail, size)
                f.seek(0)
            try:
                im = Image.open(f)
                im.size  # noqa: B018 - header parsed
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                damaged = _check_end(ImageInfo(path, format=_sniff(head), file_size=size), head, tail, size)
                if damaged.error:
                    return damaged
                if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
                    return ImageInfo(path, file_size=size, error_code="not-an-image",
                                     error=f"a HEIC/AVIF photo named {path.suffix}: the trainer cannot read it")
                if isinstance(e, UnidentifiedImageError):
                    return ImageInfo(path, file_size=size, error_code="not-an-image",
                                     error="not an image (Pillow cannot identify it; the extension lies)")
                return ImageInfo(path, file_size=size, error_code="undecodable", error=f"cannot be read: {e}")
            info = ImageInfo(path, format=im.format, size=im.size, mode=im.mode, file_size=size,
                             bits=_bits(im, head), orientation=_orientation(im),
                             has_alpha=im.mode in _ALPHA_MODES or "transparency" in im.info)
    except OSError as e:
        return ImageInfo(path, error_code="unreadable", error=f"cannot be read: {e.strerror or e}")
    return _check_end(info, head, tail, size)


def _webp_header(f, size: int) -> dict | None:
    """Size, alpha and EXIF orientation of a WebP from its RIFF chunks (None: let Pillow try)."""
    f.seek(12)
    width = height = None
    alpha = False
    orientation = 1
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        fourcc, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
        if fourcc == b"VP8X":
            data = f.read(10)
            alpha = bool(data[0] & 0x10)
            width = 1 + int.from_bytes(data[4:7], "little")
            height = 1 + int.from_bytes(data[7:10], "little")
        elif fourcc == b"VP8 " and width is None:
            data = f.read(10)
            if data[3:6] != b"\x9d\x01\x2a":
                return None
            width = int.from_bytes(data[6:8], "little") & 0x3FFF
            height = int.from_bytes(data[8:10], "little") & 0x3FFF
        elif fourcc == b"VP8L" and width is None:
            data = f.read(5)
            if data[:1] != b"\x2f":
                return None
            bits = int.from_bytes(data[1:5], "little")
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            alpha = alpha or bool((bits >> 28) & 1)
        elif fourcc == b"ALPH":
            alpha = True
        elif fourcc == b"EXIF":
            raw = f.read(min(length, 1 << 16))
            try:
                exif = Image.Exif()
                exif.load(raw[6:] if raw.startswith(b"Exif\x00\x00") else raw)
                value = exif.get(ORIENTATION_TAG, 1)
                orientation = int(value) if value in range(1, 9) else 1
            except Exception:  # a broken EXIF block only hides the orientation
                pass
        elif fourcc == b"ANIM":
            return None
        pos += 8 + length + (length & 1)
    if not width or not height:
        return None
    return {"size": (width, height), "mode": "RGBA" if alpha else "RGB", "has_alpha": alpha,
            "orientation": orientation}


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    return None


def _bits(im, head: bytes) -> int:
    if im.format == "PNG" and len(head) >= 25:
        return head[24]
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    return 8


def _orientation(im) -> int:
    try:
        if im.format == "PNG":  # PNG's getexif() decodes the whole image: read the early chunk only
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = exif.get(ORIENTATION_TAG, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # broken EXIF blocks are common and harmless for training
        return 1


def _check_end(info: ImageInfo, head: bytes, tail: bytes, size: int) -> ImageInfo:
    fmt = info.format
    if fmt == "PNG" and _PNG_END not in tail[-64:]:
        return replace(info, error_code="truncated", error="truncated: the PNG has no end chunk")
    if fmt == "WEBP" and head[:4] == b"RIFF" and int.from_bytes(head[4:8], "little") + 8 > size:
        return replace(info, error_code="truncated", error="truncated: the WebP file is shorter than its header says")
    if fmt == "BMP" and int.from_bytes(head[2:6], "little") > size:
        return replace(info, error_code="truncated", error="truncated: the BMP file is shorter than its header says")
    if fmt in ("JPEG", "MPO") and b"\xff\xd9" not in tail:
        return replace(info, suspect="may be truncated: no JPEG end marker near the end of the file")
    return info


def verify_image(info: ImageInfo, *, want_hash: bool = True) -> ImageInfo:
    """Decode the whole image (as the trainer will); sets error when that fails, and the dHash."""
    if info.error:
        return info
    try:
        with Image.open(info.path) as im:
            im.load()
            h = _dhash(im) if want_hash else None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        return replace(info, error_code="undecodable", suspect=None,
                       error=f"cannot be decoded: {e}".rstrip())
    return replace(info, suspect=None, dhash=h)


def with_dhash(info: ImageInfo) -> ImageInfo:
    """The image with its 64-bit dHash (JPEGs decode a reduced draft, so this stays cheap)."""
    if info.error or info.dhash is not None:
        return info
    try:
        with Image.open(info.path) as im:
            im.draft("L", (64, 64))
            return replace(info, dhash=_dhash(im))
    except Exception:  # an undecodable image shows up in --verify; a missing hash only skips a check
        return info


def _dhash(im) -> int:
    g = im.convert("L") if im.mode != "L" else im
    px = g.resize((9, 8), Image.Resampling.BILINEAR, reducing_gap=2.0).tobytes()
    bits = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            bits = (bits << 1) | (px[base + col] > px[base + col + 1])
    return bits


def file_digest(path: Path, *, quick: bool = False) -> str:
    """SHA-256 of the file's bytes (`quick`: of its first and last 64 KiB only, to rule pairs out)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if quick:
            h.update(f.read(1 << 16))
            f.seek(0, 2)
            f.seek(max(0, f.tell() - (1 << 16)))
            h.update(f.read())
            return h.hexdigest()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
                 min_items: int = 32, on_done: Callable[[int], None] | None = None) -> list[R]:
    """`fn` over `items` in order; threads when there are enough items to pay for them.

    `on_done(count)` is called in the calling thread as results come in (for progress)."""
    workers = workers or min(8, os.cpu_count() or 1)
    out: list[R] = []
    if workers <= 1 or len(items) < min_items:
        results: Iterable[R] = (fn(x) for x in items)
        for r in results:
            out.append(r)
            if on_done:
                on_done(len(out))
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk = 1 if on_done else max(1, len(items) // (workers * 4))
        for r in pool.map(fn, items, chunksize=chunk):
            out.append(r)
            if on_done:
                on_done(len(out))
    return out


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (a ^ b).bit_count()


def near_pairs(hashes: Iterable[tuple[int, int]], max_distance: int) -> list[tuple[int, int]]:
    """Pairs of ids whose hashes differ in at most `max_distance` bits (banded, not all-pairs)."""
    items = list(hashes)
    bands = max_distance + 1  # pigeonhole: some band of a close pair is identical
    width = 64 // bands
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for b in range(bands):
        shift, mask = b * width, (1 << width) - 1
        groups: dict[int, list[tuple[int, int]]] = {}
        for ident, h in items:
            groups.setdefault((h >> shift) & mask, []).append((ident, h))
        for members in groups.values():
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    a, b2 = members[i], members[j]
                    key = (min(a[0], b2[0]), max(a[0], b2[0]))
                    if key not in seen and hamming(a[1], b2[1]) <= max_distance:
                        seen.add(key)
                        out.append(key)
    return sorted(out)
