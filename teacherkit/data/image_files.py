"""Checks of the image files an annotation file names, reading headers only.

Pillow's ``Image.open`` parses the header (size, EXIF) without decoding pixels. Whether
the file is complete is judged from its last bytes: a JPEG ends with the EOI marker
``FF D9`` (entropy-coded data cannot contain it), a PNG with the ``IEND`` chunk. Files are
checked in a thread pool: the work is waiting on the disk, not computing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.data.findings import Finding, finding

#: EXIF orientations (tag 0x0112) that swap width and height when applied.
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_TAIL = 64


@dataclass(frozen=True)
class ImageEntry:
    index: int
    image_id: Any
    file_name: str
    width: int | None
    height: int | None


def _complete(fmt: str | None, fh: Any) -> bool | None:
    """Whether the file ends as its format requires; ``None`` when we cannot tell."""
    if fmt not in ("JPEG", "PNG", "MPO"):
        return None
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    fh.seek(max(0, end - _TAIL))
    tail = fh.read().rstrip(b"\x00\r\n ")  # some writers pad after the end marker
    if fmt == "PNG":
        return b"IEND" in tail[-12:]
    return tail.endswith(b"\xff\xd9")


def check_one(entry: ImageEntry, images_dir: Path) -> list[Finding]:
    from PIL import Image, UnidentifiedImageError

    where = {"image_id": entry.image_id}
    fpath = f"$.images[{entry.index}].file_name"
    path = images_dir / entry.file_name
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return [finding("file.missing", f"{path} does not exist", fpath, **where)]
    except OSError as exc:
        return [finding("file.unreadable", f"{path}: {exc.strerror or exc}", fpath, **where)]
    with fh:
        try:
            with Image.open(fh) as img:
                fmt, (width, height) = img.format, img.size
                try:
                    orientation = img.getexif().get(_EXIF_ORIENTATION)
                except Exception:  # a corrupt EXIF block is not a corrupt image
                    orientation = None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            return [finding("file.unreadable", f"{path} is not a readable image: {exc}", fpath, **where)]
        found: list[Finding] = []
        if _complete(fmt, fh) is False:
            found.append(finding("file.truncated", f"{path} ends early (no {fmt} end marker); part of the image "
                                 "is missing", fpath, **where))
    if entry.width is None or entry.height is None:
        return found
    json_size = (entry.width, entry.height)
    shown = (height, width) if orientation in _SWAPS_AXES else (width, height)
    if orientation not in (None, 1):
        if json_size == shown:
            note = "the JSON size matches the rotated view: load images with EXIF orientation applied"
        elif json_size == (width, height):
            note = ("the JSON size matches the stored pixels, not the rotated view: annotations are in the "
                    "unrotated frame; load images without applying EXIF orientation")
        else:
            note = ""
        if note:
            found.append(finding("file.exif_rotated", f"{path} has EXIF orientation {orientation}; {note}",
                                 fpath, **where))
    if json_size not in ((width, height), shown):
        found.append(finding("file.size_mismatch", f"{path} is {width}x{height}, the JSON says "
                             f"{entry.width}x{entry.height}", f"$.images[{entry.index}]", **where))
    return found


def check_image_files(entries: Sequence[ImageEntry], images_dir: Path, workers: int | None = None) -> list[Finding]:
    """Findings for every image file, in ``entries`` order."""
    images_dir = Path(images_dir)
    if not entries:
        return []
    workers = workers or min(32, (os.cpu_count() or 1) * 4)
    if workers <= 1 or len(entries) < 8:
        results = [check_one(e, images_dir) for e in entries]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda e: check_one(e, images_dir), entries, chunksize=16))
    return [f for found in results for f in found]
