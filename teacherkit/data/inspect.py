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

from teacherkit.data.coco import CocoDataset, load_coco
from teacherkit.data.info import DatasetInfo

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.plugins import PluginHost


def _host(host: PluginHost | None) -> PluginHost:
    if host is not None:
        return host
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager()


def class_mapping(category_ids: list[int]) -> dict[int, int]:
    """COCO category id → contiguous index, in ascending id order (gaps and id 0 allowed)."""
    return {cid: index for index, cid in enumerate(sorted(category_ids))}


def inspect_dataset(coco: CocoDataset | str | Path, host: PluginHost | None = None) -> DatasetInfo:
    """Facts about a dataset: kinds of annotation (through the detector hooks), sizes,
    classes and their contiguous mapping, per-class counts, images without annotations."""
    dataset = coco if isinstance(coco, CocoDataset) else load_coco(coco)
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
