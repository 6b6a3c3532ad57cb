"""Checks of the image files an annotation file names, reading headers only.

Pillow's ``Image.open`` parses the header (size, EXIF) without decoding pixels. Whether
the file is complete is judged from its last bytes: a JPEG ends with the EOI marker
``FF D9`` (entropy-coded data cannot contain it), a PNG with the ``IEND`` chunk. Files are
checked in a thread pool: the work is waiting on the disk, not computing.

Two refusals live here because every reader of images goes through them:
:func:`resolve_image_path` (a ``file_name`` that is absolute or climbs out with ``..``
is not read unless ``--allow-outside-images`` / ``TEACHERKIT_ALLOW_OUTSIDE_IMAGES=1``
says so) and :func:`refuse_decompression_bombs` (Pillow's decompression-bomb warning is an
error: an image over its pixel limit is reported, never decoded).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from teacherkit.data.findings import Finding, finding
from teacherkit.errors import DataError

#: Set to 1 (``teacherkit --allow-outside-images`` does) to read images outside the folder.
ALLOW_OUTSIDE_IMAGES_ENV = "TEACHERKIT_ALLOW_OUTSIDE_IMAGES"
ALLOW_HINT = f"pass 'teacherkit --allow-outside-images <command> ...' (or set {ALLOW_OUTSIDE_IMAGES_ENV}=1) to read it"

#: EXIF orientations (tag 0x0112) that swap width and height when applied.
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_TAIL = 64


def outside_images_allowed() -> bool:
    """Whether the user allowed file names that leave the image folder."""
    return os.environ.get(ALLOW_OUTSIDE_IMAGES_ENV, "").strip().lower() in ("1", "true", "yes")


def escapes_folder(file_name: str) -> bool:
    """Whether ``file_name`` is absolute (POSIX or Windows) or climbs out with ``..``."""
    if ".." not in file_name and ":" not in file_name and not file_name.startswith(("/", "\\")):
        return False  # the usual "000000391895.jpg" needs no path parsing
    for flavour in (PurePosixPath, PureWindowsPath):
        pure = flavour(file_name)
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return True
    return False


def resolve_image_path(images_dir: Path, file_name: str, allow_outside: bool | None = None, *,
                       image_id: Any = None) -> Path:
    """The path of an image file named by a COCO ``file_name``, relative to ``images_dir``.

    :param allow_outside: read names that leave ``images_dir`` (absolute, ``..``);
        ``None`` asks :func:`outside_images_allowed`.
    :raises DataError: naming the file name, the image id and how to allow it.
    """
    allowed = outside_images_allowed() if allow_outside is None else allow_outside
    if not allowed and escapes_folder(file_name):
        which = f"image {image_id}" if image_id is not None else "an image"
        raise DataError(f"{images_dir}: file_name {file_name!r} of {which} is absolute or leaves the image "
                        f"folder; refused ({ALLOW_HINT})")
    return Path(images_dir) / file_name


def check_image_paths(images: Iterable[Any], images_dir: Path, source: Any = None) -> None:
    """Refuse, before any work, a dataset whose ``file_name``s leave ``images_dir`` (see
    :func:`resolve_image_path`); the message names the first, and how many there are.

    :param images: items with ``id`` and ``file_name`` (``CocoImage``).
    """
    if outside_images_allowed():
        return
    bad = [img for img in images if escapes_folder(img.file_name)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}file_name {bad[0].file_name!r} of image {bad[0].id}{more} is absolute or leaves "
                        f"the image folder {images_dir}; refused ({ALLOW_HINT})")


def refuse_decompression_bombs() -> None:
    """Make Pillow's ``DecompressionBombWarning`` (an image over ``MAX_IMAGE_PIXELS``) an
    error, process-wide: such a file is reported as too large instead of decoded."""
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def is_decompression_bomb(exc: BaseException) -> bool:
    from PIL import Image

    return isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning))


def bomb_reason(exc: BaseException) -> str:
    """Why an image was refused as a decompression bomb, one line."""
    return (f"too many pixels to decode safely ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS in your own code "
            "if the image is genuine")


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
    path = images_dir / entry.file_name  # names leaving the folder were refused by the caller, or allowed
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
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return [finding("file.too_large", f"{path}: {bomb_reason(exc)}", fpath, **where)]
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
    refuse_decompression_bombs()
    workers = workers or min(32, (os.cpu_count() or 1) * 4)
    if workers <= 1 or len(entries) < 8:
        results = [check_one(e, images_dir) for e in entries]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda e: check_one(e, images_dir), entries, chunksize=16))
    return [f for found in results for f in found]
