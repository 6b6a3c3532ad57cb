"""What a dataset contains, and so which teachers train on it.

Annotation kinds come from the ``teacherkit_detect_annotations`` hooks (the core's own
``boxes``/``masks`` detectors are a built-in plugin; a keypoints plugin adds
``keypoints``), and teachers from ``teacherkit_register_teachers``: a teacher trains
when the kind it learns from is present. No mode enums.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from teacherkit.data.coco import CocoCategory, CocoDataset, CocoImage, Segmentation, decode_coco_file
from teacherkit.data.info import DatasetInfo
from teacherkit.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.plugins import PluginHost


def _host(host: PluginHost | None) -> PluginHost:
    if host is not None:
        return host
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager()


_NULL = msgspec.Raw(b"null")
_SEGMENTATION = msgspec.json.Decoder(Segmentation | None, strict=False)
_KEYPOINTS = msgspec.json.Decoder(list[float] | None, strict=False)


class LazyAnnotation(msgspec.Struct, gc=False):  # never in a cycle: keep millions off the GC's lists
    """An annotation as inspection reads it: the fields of
    :class:`~teacherkit.data.coco.CocoAnnotation`, but ``segmentation`` and ``keypoints``
    stay JSON bytes until asked for (inspection needs kinds and counts, not geometry:
    a train2017 file's polygons as Python floats take gigabytes)."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float] | None = None
    segmentation_json: msgspec.Raw = msgspec.field(default=_NULL, name="segmentation")
    area: float | None = None
    iscrowd: int = 0
    keypoints_json: msgspec.Raw = msgspec.field(default=_NULL, name="keypoints")
    num_keypoints: int | None = None
    score: float | None = None

    @property
    def segmentation(self) -> Segmentation | None:
        return _SEGMENTATION.decode(self.segmentation_json)

    @property
    def keypoints(self) -> list[float] | None:
        return _KEYPOINTS.decode(self.keypoints_json)


class _LazyFile(msgspec.Struct):
    images: list[CocoImage]
    categories: list[CocoCategory]
    annotations: list[LazyAnnotation] = msgspec.field(default_factory=list)


def load_for_inspection(path: str | Path) -> CocoDataset:
    """:func:`~teacherkit.data.coco.load_coco` for inspection: the same checks and
    errors, but annotations are :class:`LazyAnnotation` (geometry decoded on access).
    Each segmentation and keypoint list is type-checked once, one at a time, so that a
    file ``load_coco`` refuses is refused here too, without holding them all."""
    path = Path(path)
    file = decode_coco_file(path, _LazyFile)
    for index, ann in enumerate(file.annotations):
        for key, raw, decoder in (("segmentation", ann.segmentation_json, _SEGMENTATION),
                                  ("keypoints", ann.keypoints_json, _KEYPOINTS)):
            if raw is _NULL:
                continue
            try:
                decoder.decode(raw)
            except msgspec.ValidationError as exc:
                where = f"$.annotations[{index}].{key}"
                raise DataError(f"{path}: {_path_first(str(exc), where)}") from None
    return CocoDataset(file.images, file.annotations, file.categories, path=path)


def _path_first(message: str, prefix: str = "") -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.images[0].id``` with the path first
    (``prefix`` replaces the ``$`` of a value decoded on its own)."""
    text, sep, where = message.rpartition(" - at ")
    if not sep:
        return f"{prefix}: {message}" if prefix else message
    where = where.strip("`")
    return f"{prefix + where[1:] if prefix else where}: {text}"


def class_mapping(category_ids: list[int]) -> dict[int, int]:
    """COCO category id → contiguous index, in ascending id order (gaps and id 0 allowed)."""
    return {cid: index for index, cid in enumerate(sorted(category_ids))}


def inspect_dataset(coco: CocoDataset | str | Path, host: PluginHost | None = None) -> DatasetInfo:
    """Facts about a dataset: kinds of annotation (through the detector hooks), sizes,
    classes and their contiguous mapping, per-class counts, images without annotations."""
    dataset = coco if isinstance(coco, CocoDataset) else load_for_inspection(coco)
    kinds = _host(host).detect_annotations(dataset)
    categories = sorted(dataset.categories, key=lambda c: c.id)
    mapping = class_mapping([c.id for c in categories])
    names = {c.id: c.name for c in categories}
    counts = Counter(a.category_id for a in dataset.annotations)
    annotated = {a.image_id for a in dataset.annotations}
    return DatasetInfo(
        annotation_kinds=sorted(kinds),
        num_images=len(dataset.images),
        num_annotations=len(dataset.annotations),
        categories=[{"id": c.id, "name": c.name} for c in categories],
        class_names=[c.name for c in categories],
        class_mapping=mapping,
        per_class_counts={names[cid]: counts.get(cid, 0) for cid in sorted(names)},
        images_without_annotations=sum(1 for img in dataset.images if img.id not in annotated),
        source=str(dataset.path) if dataset.path is not None else None,
    )


def get_required_models(info: DatasetInfo, host: PluginHost | None = None) -> list[str]:
    """Names of the installed teachers whose annotation kind is present in ``info``."""
    return [spec.name for spec in _host(host).teachers_for(info.annotation_kinds)]


def describe(info: DatasetInfo, host: PluginHost | None = None) -> dict[str, Any]:
    """``info`` plus the teachers that would train (what ``teacherkit inspect --json`` prints)."""
    data = info.to_dict()
    data["teachers"] = get_required_models(info, host)
    return data
