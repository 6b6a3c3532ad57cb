"""Records of augmented views: everything in a training sample but its pixels, kept on disk
so a later epoch can rebuild the sample without reading, augmenting or resizing the image.

When a teacher cycles through ``K`` augmented views per image (``augmentation_views``) and
holds what its frozen encoder made of each view's pixels (SAM's embedding cache), epochs
``K`` and later need only the view's geometry: the masks and boxes the augmentation left,
and the key the teacher knows the pixels by. Those pass through here. The DataLoader worker
that augments a view in epochs ``< K`` writes its record; a worker of a later epoch reads it
back and hands the preprocessor a sample whose ``image`` is ``None`` (``image_shape`` says
what its size was; ``view_key`` names it) — but only when the preprocessor says the teacher
still holds that key (:func:`pixel_free`), so a view the teacher lacks is read and augmented
as before.

Layout: ``<directory>/<view>/<index>.rec``, one msgpack file per (dataset index, view),
written atomically (several workers and processes may write the same record: the bytes are
the same). Masks are stored as COCO RLE (a few kB per instance instead of ``H x W`` bytes);
other arrays as their raw bytes with dtype and shape. A record that cannot be read is
treated as absent.

A preprocessor joins in with two optional methods (``docs/plugins.md``):

- ``view_key(sample) -> str | None``: the key of the sample's pixels for the teacher, or
  ``None`` when this preprocessor always needs pixels;
- ``holds_view(key) -> bool``: whether the teacher holds what it needs of those pixels
  now, so that a sample may come without them;

and its ``__call__`` must then accept a sample with ``image`` ``None``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_bytes

#: the sample key that holds the pixels a record leaves out
IMAGE = "image"


def pixel_free(preprocessor: Any) -> bool:
    """Whether ``preprocessor`` can take samples without pixels (it has ``view_key`` and ``holds_view``)."""
    return callable(getattr(preprocessor, "view_key", None)) and callable(getattr(preprocessor, "holds_view", None))


def run_view_records(teacher_dir: Path, rank: int, preprocessor: Any = None) -> ViewRecords | None:
    """The records of one teacher's training run in process ``rank``: ``<teacher_dir>/cache/views/rank<N>``.

    With a ``preprocessor``: emptied for a new run (its teacher holds nothing yet), and the
    training set's part (``train``; :meth:`ViewRecords.part`) returned, or ``None`` when the
    preprocessor always needs pixels. Without: the whole folder, to remove at the run's end
    (:meth:`ViewRecords.reset`). One folder per process: a view may skip its pixels only
    where this process's teacher holds them. A teacher may keep its own files of the run in
    another part of that folder (SAM: the marks of the embeddings it holds); they go with it."""
    records = ViewRecords(Path(teacher_dir) / "cache" / "views" / f"rank{int(rank)}")
    if preprocessor is None:
        return records
    return records.reset().part("train") if pixel_free(preprocessor) else None


class ViewRecords:
    """The records of one training run's augmented views under ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def reset(self) -> ViewRecords:
        """Remove every record (a new run starts without any: its teacher holds nothing yet)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        return self

    def remove(self) -> None:
        """Remove every record and the folders left empty above them, up to ``cache`` (the run is over)."""
        self.reset()
        for parent in (self.directory.parent, self.directory.parent.parent):
            try:
                parent.rmdir()
            except OSError:  # not empty (another process's records, a teacher's cache): kept
                break

    def part(self, name: str) -> ViewRecords:
        """The records of another dataset of the same run (replay images have their own indices)."""
        return ViewRecords(self.directory / name)

    def path(self, index: int, view: int) -> Path:
        return self.directory / str(int(view)) / f"{int(index)}.rec"

    def put(self, index: int, view: int, sample: dict[str, Any], key: str) -> None:
        """Record ``sample`` (an augmented training sample) without its pixels, under ``key``."""
        atomic_write_bytes(self.path(index, view), encode_record(sample, key))

    def get(self, index: int, view: int) -> dict[str, Any] | None:
        """The recorded sample of ``(index, view)`` with ``image`` ``None`` and ``image_shape``
        and ``view_key`` set, or ``None`` when there is no readable record."""
        try:
            data = self.path(index, view).read_bytes()
        except OSError:
            return None
        try:
            return decode_record(data)
        except Exception:  # a record this version cannot read: rebuilt from the image
            return None


def encode_record(sample: dict[str, Any], key: str) -> bytes:
    """msgpack bytes of ``sample`` without ``image``, plus ``image_shape`` and ``view_key``."""
    import msgspec

    image = np.asarray(sample[IMAGE])
    body = {k: _pack(k, v) for k, v in sample.items() if k != IMAGE}
    return msgspec.msgpack.encode({"v": 1, "key": key, "image_shape": list(image.shape),
                                   "image_dtype": image.dtype.str, "sample": body})


def decode_record(data: bytes) -> dict[str, Any]:
    """The sample :func:`encode_record` wrote, with ``image`` ``None``."""
    import msgspec

    record = msgspec.msgpack.decode(data)
    if record.get("v") != 1:
        raise ValueError(f"view record version {record.get('v')!r}")
    sample = {k: _unpack(v) for k, v in record["sample"].items()}
    sample[IMAGE] = None
    sample["image_shape"] = tuple(record["image_shape"])
    sample["view_key"] = record["key"]
    return sample


def _pack(name: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if name == "masks" and value.ndim == 3:
            return {"__masks__": _masks_to_rles(value)}
        return {"__nd__": [value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _pack(k, v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(name, v) for v in value]}
    if isinstance(value, list):
        return [_pack(name, v) for v in value]
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if "__nd__" in value:
            dtype, shape, raw = value["__nd__"]
            return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        if "__masks__" in value:
            return _rles_to_masks(value["__masks__"])
        if "__tuple__" in value:
            return tuple(_unpack(v) for v in value["__tuple__"])
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def _masks_to_rles(masks: np.ndarray) -> list[Any]:
    """``(N, H, W)`` masks as ``[dtype, N, H, W, [counts...]]``: COCO RLE of each mask's non-zero
    pixels, run along rows (the RLE of its transpose: pycocotools reads a C-ordered ``(N, H, W)``
    stack as a Fortran-ordered ``(W, H, N)`` one, so neither way copies the masks; 3x faster
    than runs along columns on 800x1200 masks). Only 0/1 masks round-trip exactly; the samples'
    masks are 0/1 (``Sample``)."""
    from pycocotools import mask as mask_utils

    n, height, width = masks.shape
    if masks.size and masks.max() > 1:
        raise ValueError("view records keep 0/1 masks only")
    counts = []
    if n:
        stack = np.ascontiguousarray(masks.astype(np.uint8, copy=False)).transpose(2, 1, 0)  # (W, H, N), Fortran
        counts = [r["counts"] for r in mask_utils.encode(stack)]
    return [masks.dtype.str, n, height, width, counts]


def _rles_to_masks(packed: list[Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    dtype, n, height, width, counts = packed
    if not n:
        return np.zeros((0, height, width), np.dtype(dtype))
    decoded = mask_utils.decode([{"size": [width, height], "counts": c} for c in counts])  # (W, H, N), Fortran
    return decoded.transpose(2, 1, 0).astype(np.dtype(dtype), copy=False)  # (N, H, W), C order
