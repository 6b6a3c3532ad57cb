"""Typed, fast COCO loading.

:func:`load_coco` decodes straight into msgspec Structs (several times faster and
smaller than ``json.load`` plus dicts) and keeps pycocotools' meaning of every field:
segmentations stay polygons, compressed RLE (``str`` counts) or uncompressed RLE (list
counts), ``iscrowd`` defaults to 0.

Segmentations stay JSON bytes (:class:`msgspec.Raw`, views into the file's bytes) until a
reader asks for ``ann.segmentation``, which decodes them every time: a train2017 file's
polygons as Python floats take gigabytes, and objects that a forked DataLoader worker
never writes to keep sharing the parent's pages. Each is type-checked once at load, one
at a time, so a file with a malformed segmentation is refused at load as before.

Loading is lenient about what :mod:`teacherkit.data.validate` reports as problems of
content (a box outside its image, a zero-area polygon), so training on a slightly
imperfect file works, but refuses what would make the dataset silently wrong: undecodable
bytes, a field of the wrong type, duplicate image ids. Those raise
:class:`~teacherkit.errors.DataError` naming the file and the byte offset or JSON path.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from teacherkit.data.jsonbytes import UTF8_BOM, describe_decode_error, position, read_bytes, utf8_error_offset
from teacherkit.errors import DataError

log = logging.getLogger("teacherkit.data")

Segmentation = list[list[float]] | dict[str, Any]


class CocoImage(msgspec.Struct, omit_defaults=True):
    """One entry of ``images``."""

    id: int
    file_name: str
    width: int
    height: int


#: The stored segmentation of an annotation that has none.
NO_SEGMENTATION = msgspec.Raw(b"null")
# strict=False as the whole-file decode: numbers written as strings become floats
_SEGMENTATION = msgspec.json.Decoder(Segmentation | None, strict=False)


def decode_segmentation(stored: Any) -> Segmentation | None:
    """A stored segmentation as Python values: JSON bytes are decoded (a new object each
    time), a value built from Python data is returned as it is."""
    if type(stored) is msgspec.Raw:
        return _SEGMENTATION.decode(stored)
    return stored


class CocoAnnotation(msgspec.Struct, omit_defaults=True, gc=False):  # no cycles: a million stay off the GC's lists
    """One entry of ``annotations``; absent optional fields are ``None``.

    ``segmentation`` is decoded on each access from ``segmentation_json`` (the field's
    JSON bytes as found in the file, or the value itself when built with
    :meth:`CocoDataset.from_dict`); a caller that reads it several times keeps the result."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float] | None = None
    segmentation_json: msgspec.Raw = msgspec.field(default=NO_SEGMENTATION, name="segmentation")
    area: float | None = None
    iscrowd: int = 0
    keypoints: list[float] | None = None
    num_keypoints: int | None = None
    score: float | None = None  # present in detection results / pseudo-labels

    @property
    def segmentation(self) -> Segmentation | None:
        return decode_segmentation(self.segmentation_json)

    @segmentation.setter
    def segmentation(self, value: Segmentation | None) -> None:
        self.segmentation_json = NO_SEGMENTATION if value is None else value


def _python_twin(struct: type) -> type:
    """``struct`` with its raw ``segmentation`` typed as Python values, for
    :meth:`CocoDataset.from_dict` (``msgspec.convert`` cannot make ``Raw``) and for wording
    a malformed segmentation's error as a whole-file decode does. Derived from the
    struct's own fields, so the two cannot drift apart."""
    fields = []
    for f in msgspec.structs.fields(struct):
        if f.name == "segmentation_json":
            fields.append(("segmentation", Segmentation | None, None))
        elif f.required:
            fields.append((f.name, f.type))
        else:
            fields.append((f.name, f.type, f.default))
    return msgspec.defstruct("_PythonAnnotation", fields)


_PythonAnnotation = _python_twin(CocoAnnotation)


def _typed(ann: Any) -> CocoAnnotation:
    """The :class:`CocoAnnotation` of a :data:`_PythonAnnotation`."""
    values = msgspec.structs.asdict(ann)
    segmentation = values.pop("segmentation")
    return CocoAnnotation(**values, segmentation_json=NO_SEGMENTATION if segmentation is None else segmentation)


class CocoCategory(msgspec.Struct, omit_defaults=True):
    """One entry of ``categories``."""

    id: int
    name: str
    supercategory: str | None = None
    keypoints: list[str] | None = None
    skeleton: list[list[int]] | None = None


class _CocoFile(msgspec.Struct):
    images: list[CocoImage]
    categories: list[CocoCategory]
    annotations: list[CocoAnnotation] = msgspec.field(default_factory=list)
    info: Any = msgspec.UNSET
    licenses: Any = msgspec.UNSET


class _PythonFile(_CocoFile):
    """The file with every segmentation decoded (from Python data, and to word the error
    of a malformed one exactly as a whole-file decode does)."""

    annotations: list[_PythonAnnotation] = msgspec.field(default_factory=list)  # type: ignore[assignment,valid-type]


class CocoDataset:
    """A loaded COCO dataset: ``images``, ``annotations``, ``categories`` (typed items)
    with lookups by image id. Build it with :func:`load_coco` or :meth:`from_dict`."""

    def __init__(self, images: Sequence[CocoImage], annotations: Sequence[CocoAnnotation],
                 categories: Sequence[CocoCategory], *, path: Path | None = None,
                 info: Any = None, licenses: Any = None) -> None:
        self.path = Path(path) if path is not None else None
        self.images = list(images)
        self.annotations = list(annotations)
        self.categories = list(categories)
        self.info = info
        self.licenses = licenses
        source = str(self.path) if self.path else "dataset"
        self._images_by_id: dict[int, CocoImage] = {}
        for index, image in enumerate(self.images):
            if image.id in self._images_by_id:
                raise DataError(f"{source}: duplicate image id {image.id} at $.images[{index}] "
                                f"(run `teacherkit validate` for every problem)")
            self._images_by_id[image.id] = image
        self._anns_by_image: dict[int, list[CocoAnnotation]] = defaultdict(list)
        dangling = 0
        bad_boxes = 0
        for ann in self.annotations:
            if ann.bbox is not None and len(ann.bbox) != 4:
                ann.bbox = None  # a box that is not 4 numbers is no box; validation names it
                bad_boxes += 1
            if ann.image_id not in self._images_by_id:
                dangling += 1
            self._anns_by_image[ann.image_id].append(ann)
        if bad_boxes:
            log.warning("%s: %d annotation(s) have a bbox that is not 4 numbers; ignored "
                        "(run `teacherkit validate`)", source, bad_boxes)
        if dangling:
            log.warning("%s: %d annotation(s) refer to image ids not in `images`; they are "
                        "ignored per image (run `teacherkit validate`)", source, dangling)

    def __repr__(self) -> str:
        return (f"CocoDataset(path={str(self.path) if self.path else None!r}, images={len(self.images)}, "
                f"annotations={len(self.annotations)}, categories={len(self.categories)})")

    def image_by_id(self, image_id: int) -> CocoImage:
        """The image with this id; ``KeyError`` when there is none."""
        return self._images_by_id[image_id]

    def annotations_for(self, image_id: int) -> list[CocoAnnotation]:
        """The annotations of one image, in file order (empty list when none)."""
        return list(self._anns_by_image.get(image_id, ()))

    @property
    def category_ids(self) -> list[int]:
        return [c.id for c in self.categories]

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | Path | None = None) -> CocoDataset:
        """Build from a plain COCO dict (as ``json.load`` returns)."""
        where = str(path) if path is not None else "dataset"
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object with images/annotations/categories, "
                            f"got {type(data).__name__}")
        try:
            file = msgspec.convert(data, type=_PythonFile, strict=False)
        except msgspec.ValidationError as exc:
            raise DataError(f"{where}: {exc}") from None
        except RecursionError:
            raise DataError(f"{where}: values are nested too deeply (json.too_deep)") from None
        file.annotations = [_typed(ann) for ann in file.annotations]
        return cls._from_file(file, path)

    @classmethod
    def _from_file(cls, file: _CocoFile, path: str | Path | None) -> CocoDataset:
        return cls(file.images, file.annotations, file.categories, path=Path(path) if path is not None else None,
                   info=None if file.info is msgspec.UNSET else file.info,
                   licenses=None if file.licenses is msgspec.UNSET else file.licenses)

    def to_dict(self) -> dict[str, Any]:
        """A plain COCO dict (fields that were absent stay absent)."""
        out: dict[str, Any] = {}
        if self.info is not None:
            out["info"] = self.info
        if self.licenses is not None:
            out["licenses"] = self.licenses
        out["images"] = msgspec.to_builtins(self.images)
        out["annotations"] = annotations = msgspec.to_builtins(self.annotations, builtin_types=(msgspec.Raw,))
        for ann in annotations:  # in place, so the keys keep the fields' order
            if "segmentation" in ann:
                segmentation = decode_segmentation(ann["segmentation"])
                if segmentation is None:
                    del ann["segmentation"]  # an explicit null: absent, as omit_defaults writes it
                else:
                    ann["segmentation"] = segmentation
        out["categories"] = msgspec.to_builtins(self.categories)
        return out


def load_coco(path: str | Path) -> CocoDataset:
    """Load a COCO annotation file into a :class:`CocoDataset`.

    Raises :class:`~teacherkit.errors.DataError` with the file name and byte offset (line,
    column) for bytes that are not JSON, the JSON path for a structurally unusable file
    (``$.annotations[12].bbox: Expected array, got str``), and duplicate image ids.
    """
    path = Path(path)
    try:
        file = decode_coco_file(path, _CocoFile)
    except DataError:
        # a segmentation before the problem found may be malformed too: name the first
        # problem in file order, as a decode that checks segmentations with the rest does
        decode_coco_file(path, _PythonFile)
        raise
    _check_segmentations(path, file.annotations)
    return CocoDataset._from_file(file, path)


def _check_segmentations(path: Path, annotations: list[CocoAnnotation]) -> None:
    """Refuse the file if any segmentation would not decode, one at a time (none is kept),
    with the message a whole-file decode gives (the file is decoded again to get it)."""
    decode = _SEGMENTATION.decode
    for ann in annotations:
        stored = ann.segmentation_json
        if stored is NO_SEGMENTATION:
            continue
        try:
            decode(stored)
        except (msgspec.ValidationError, msgspec.DecodeError):
            decode_coco_file(path, _PythonFile)  # raises the DataError naming the place
            raise DataError(f"{path}: annotation {ann.id}: segmentation cannot be decoded") from None


def decode_coco_file(path: Path, struct: type) -> Any:
    """The bytes of ``path`` decoded into ``struct`` (a msgspec Struct type), with
    :func:`load_coco`'s checks and messages (UTF-8, JSON, types, nesting)."""
    data = read_bytes(path)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]  # harmless; validation still mentions it
    offset = utf8_error_offset(data)
    if offset is not None:
        raise DataError(f"{path}: not UTF-8 text at {position(data, offset)}; "
                        f"`teacherkit validate --fix` can transcode it")
    try:
        file = msgspec.json.decode(data, type=struct, strict=False)
    except msgspec.ValidationError as exc:
        raise DataError(f"{path}: {_path_first(str(exc))}") from None
    except msgspec.DecodeError as exc:
        _offset, message = describe_decode_error(str(exc), data)
        raise DataError(f"{path}: {message}") from None
    except RecursionError:
        raise DataError(f"{path}: arrays or objects are nested too deeply to decode (json.too_deep); "
                        "this is not a COCO file") from None
    return file


def _path_first(message: str) -> str:
    """msgspec says ``Expected `int`, got `str` - at `$.images[0].id```; lead with the path."""
    text, sep, where = message.rpartition(" - at ")
    if not sep:
        return message
    return f"{where.strip('`')}: {text}"
