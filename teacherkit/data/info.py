"""Facts about a dataset that decide which teachers train and how."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DatasetInfo:
    """What :func:`teacherkit.inspect_dataset` learns from a COCO file.

    ``class_mapping`` maps COCO category id → contiguous class index (0-based, in
    ascending category-id order); ids may be gapped or start at 0. ``class_names`` is
    indexed by that contiguous index.
    """

    annotation_kinds: list[str] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    categories: list[dict[str, Any]] = field(default_factory=list)  # [{"id": .., "name": ..}]
    class_names: list[str] = field(default_factory=list)
    class_mapping: dict[int, int] = field(default_factory=dict)
    per_class_counts: dict[str, int] = field(default_factory=dict)  # class name -> annotations
    images_without_annotations: int = 0
    source: str | None = None

    @property
    def has_boxes(self) -> bool:
        return "boxes" in self.annotation_kinds

    @property
    def has_masks(self) -> bool:
        return "masks" in self.annotation_kinds

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def category_id_of(self, index: int) -> int:
        """The COCO category id of a contiguous class index."""
        return int(self.categories[index]["id"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_mapping"] = {str(k): v for k, v in self.class_mapping.items()}
        data.update(has_boxes=self.has_boxes, has_masks=self.has_masks, num_classes=self.num_classes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["class_mapping"] = {int(k): int(v) for k, v in kwargs.get("class_mapping", {}).items()}
        return cls(**kwargs)


def category_key(name: str) -> str:
    """How category names are compared across files (case and spacing ignored: the names
    are the teachers' text prompts). Replay and ``evaluate`` match categories by it."""
    return " ".join(str(name).split()).casefold()
