"""Augmentation pipelines that keep boxes, masks and labels consistent.

The box/mask rule (``docs/augmentation.md`` repeats it for users):

* Boxes are COCO ``[x, y, w, h]`` in pixels. Boxes are clipped to the image before
  augmenting; one with no area inside the image is dropped.
* Instances without a mask (box-only data, or a box-only annotation among masked
  ones): every transform clips the box to the image, and the instance is dropped when
  less than ``min_visibility`` (default 10%) of its box stays in view, or when the box
  becomes narrower or shorter than 1 px.
* Instances with a mask: the mask is the truth. The given box is ignored; the box
  that leaves the pipeline is the tight box of the augmented mask. The instance is
  dropped when fewer than ``min_visibility`` of its mask's pixels remain (counted after
  the transforms, so a zoom can make up for pixels cut off) or none do.
* Keypoints ``(N, K, 3)`` ``(x, y, visibility)`` move with the image (albumentations'
  keypoint targets). A point that leaves the image becomes ``(0, 0, 0)`` (COCO's "not
  labelled"). An instance with keypoints but neither a box nor a mask (its box is
  ``[0, 0, 0, 0]``) is kept while at least one of its labelled points stays in view, and
  its box stays ``[0, 0, 0, 0]``.
* Every per-instance array follows its instance: the result's ``kept`` holds the
  input indices of the instances that remain, in input order.
* The image size never changes.

albumentations is imported when a pipeline is built, never at module import of the
plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from teacherkit.config import ConfigError
from teacherkit_augment import bitmasks
from teacherkit_augment.bitmasks import as_binary

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.types import Sample

#: Sample keys holding one entry per instance; they are re-indexed with ``kept``.
PER_INSTANCE_KEYS: tuple[str, ...] = ("labels", "category_ids", "annotation_ids", "iscrowd")


class AugmentationInputError(ConfigError):
    """Arrays given to a pipeline disagree in shape; the message names the argument."""


def order_transforms(transforms: Sequence[Any]) -> list[Any]:
    """Geometric transforms first, then pixel-level ones, then holes.

    Geometry first so photometric effects (shadows, rain, blur) are not warped as if
    they belonged to the scene; holes last so they keep sharp edges. Order within a
    stage follows the request, so it stays deterministic.
    """
    return sorted(transforms, key=_stage)  # sorted() is stable


def _stage(transform: Any) -> int:
    from albumentations.augmentations.dropout.transforms import BaseDropout
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import DualTransform

    if isinstance(transform, BaseDropout):
        return 2
    if isinstance(transform, BaseCompose):
        return min((_stage(t) for t in transform.transforms), default=1)
    return 0 if isinstance(transform, DualTransform) else 1


def _nodes(transform: Any) -> list[Any]:
    """``transform`` and everything nested in it, parents before children."""
    from albumentations.core.composition import BaseCompose

    out = [transform]
    for child in transform.transforms if isinstance(transform, BaseCompose) else ():
        out.extend(_nodes(child))
    return out


def reseed(compose: Any, seed: int) -> None:
    """Give every transform of ``compose`` its own generator derived from ``seed``.

    albumentations' ``set_random_seed`` hands all transforms the same seed, so their
    first draws coincide (transforms with equal ``p`` would fire together); a
    :class:`numpy.random.SeedSequence` spawns independent streams instead.
    """
    nodes = _nodes(compose)
    states = np.random.SeedSequence(int(seed) % (1 << 64)).generate_state(len(nodes), dtype=np.uint32)
    for node, state in zip(nodes, states):  # parents first: a compose re-seeds its children, which follow
        node.set_random_seed(int(state))


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight COCO ``[x, y, w, h]`` boxes of ``(N, H, W)`` masks; zeros for empty masks."""
    from teacherkit_augment.bitmasks import mask_boxes

    return mask_boxes(np.asarray(masks))


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip xywh boxes to the image, in float64 so the float32 result stays inside."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(b[:, 0], 0, width)
    y0 = np.clip(b[:, 1], 0, height)
    x1 = np.clip(b[:, 0] + b[:, 2], 0, width)
    y1 = np.clip(b[:, 1] + b[:, 3], 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _check_keypoints(keypoints: Any, n: int) -> np.ndarray | None:
    if keypoints is None:
        return None
    kps = np.asarray(keypoints, dtype=np.float32)
    if kps.size == 0:
        return kps.reshape(n, 0, 3) if n else np.zeros((0, 0, 3), np.float32)
    if kps.ndim != 3 or kps.shape[0] != n or kps.shape[2] != 3:
        raise AugmentationInputError(f"keypoints: expected shape ({n}, K, 3) of (x, y, visibility) per instance, "
                                     f"got {kps.shape}")
    return kps


def _move_keypoints(kps: np.ndarray, out: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The keypoints albumentations returned, back in ``(N, K, 3)``; points that left the
    image are zeroed (visibility 0)."""
    moved = np.zeros_like(kps)
    flat_index = np.asarray(out["keypoint_index"], dtype=np.int64).reshape(-1)
    if not len(flat_index):
        return moved
    xy = np.asarray(out["keypoints"], dtype=np.float32).reshape(len(flat_index), -1)[:, :2]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    inst, k = np.divmod(flat_index[inside], max(kps.shape[1], 1))
    moved[inst, k, :2] = xy[inside]
    moved[inst, k, 2] = kps[inst, k, 2]
    return moved


def _check_inputs(
    image: Any, masks: Any, bboxes: Any, labels: Any
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise AugmentationInputError(f"image: expected an (H, W, C) array, got shape {image.shape}")
    height, width = image.shape[:2]
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise AugmentationInputError(
                f"masks: expected shape (N, {height}, {width}) to match the image, got {masks.shape}"
            )
        masks = as_binary(masks)
    if bboxes is None:  # with masks the boxes come from them; without, there are no instances
        bboxes = np.zeros((len(masks) if masks is not None else 0, 4), dtype=np.float32)
    bboxes = np.asarray(bboxes, dtype=np.float32)
    if bboxes.size == 0:
        bboxes = bboxes.reshape(0, 4)
    if bboxes.ndim != 2 or bboxes.shape[1] != 4:
        raise AugmentationInputError(f"bboxes: expected shape (N, 4) of COCO [x, y, w, h], got {bboxes.shape}")
    if masks is not None and len(bboxes) != len(masks):
        raise AugmentationInputError(f"bboxes: {len(bboxes)} boxes for {len(masks)} masks; give one box per mask")
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(bboxes):
            raise AugmentationInputError(f"labels: {len(labels)} labels for {len(bboxes)} instances")
    return image, masks, bboxes, labels


class AugmentationPipeline:
    """albumentations ``Compose`` plus the box/mask rule of this module.

    Call it like albumentations: ``pipeline(image=img, masks=masks, bboxes=boxes,
    labels=labels)`` → ``{"image", "masks", "bboxes", "labels", "kept"}``. ``masks`` is
    ``(N, H, W)`` (any non-zero pixel is foreground) or ``None``; ``bboxes`` COCO xywh
    pixels; ``labels`` any per-instance array. Pass ``seed=`` to a call to make that
    call reproducible on its own; otherwise calls draw from the pipeline's generator
    (seeded by the constructor's ``seed``).
    """

    def __init__(self, transforms: Sequence[Any], *, seed: int | None = None, min_visibility: float = 0.1):
        import warnings

        import albumentations as A

        self.min_visibility = float(min_visibility)
        self.seed = seed
        with warnings.catch_warnings():
            # a pixel-only pipeline leaves boxes and keypoints alone, which is fine; albumentations warns about it
            warnings.filterwarnings("ignore", message="Got processor for", category=UserWarning)
            self.compose = self._compose(A, transforms)
        if seed is not None:
            reseed(self.compose, seed)

    def _compose(self, A: Any, transforms: Sequence[Any]) -> Any:
        import cv2

        return A.Compose(
            list(transforms),
            bbox_params=A.BboxParams(
                format="coco",
                label_fields=["instance_index"],
                clip=True,
                min_visibility=self.min_visibility,
                min_width=1.0,
                min_height=1.0,
                filter_invalid_bboxes=True,
            ),
            keypoint_params=A.KeypointParams(format="xy", label_fields=["keypoint_index"], remove_invisible=False),
            strict=True,
            # exact resampling keeps packed mask bits (and binary masks) intact whatever a transform asks for
            mask_interpolation=cv2.INTER_NEAREST,
        )

    @property
    def transforms(self) -> list[Any]:
        return list(self.compose.transforms)

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.compose.transforms) or "identity"
        return f"AugmentationPipeline({names})"

    def __call__(self, *, image: Any, masks: Any = None, bboxes: Any = None, labels: Any = None,
                 keypoints: Any = None, seed: int | None = None) -> dict[str, Any]:
        image, masks, boxes, labels = _check_inputs(image, masks, bboxes, labels)
        kps = _check_keypoints(keypoints, len(boxes))
        height, width = image.shape[:2]
        if seed is not None:
            reseed(self.compose, seed)

        n = len(boxes)
        packed = bitmasks.pack(masks) if masks is not None and n else None
        has_mask = np.zeros(n, dtype=bool)
        areas = None
        if packed is not None:
            mask_boxes = bitmasks.packed_boxes(packed, n)
            has_mask = mask_boxes[:, 2] > 0
            boxes = np.where(has_mask[:, None], mask_boxes, boxes)  # the mask is the truth where there is one
            areas = bitmasks.pixel_counts(masks)
        boxes = _clip_boxes(boxes, width, height)
        # Masked instances travel as mask bits only: albumentations' own box handling for
        # warps rasterises every box, which costs more than the warp, and is not needed.
        has_box = (boxes[:, 2] >= 1) & (boxes[:, 3] >= 1)
        box_only = np.flatnonzero(has_box & ~has_mask)
        data: dict[str, Any] = {"image": image, "bboxes": boxes[box_only], "instance_index": box_only}
        if packed is not None:
            data["mask"] = packed[..., 0] if packed.shape[2] == 1 else packed
        labelled = np.argwhere(kps[..., 2] > 0) if kps is not None else np.zeros((0, 2), np.int64)
        data["keypoints"] = kps[labelled[:, 0], labelled[:, 1], :2] if kps is not None else np.zeros((0, 2))
        data["keypoint_index"] = labelled[:, 0] * (kps.shape[1] if kps is not None else 0) + labelled[:, 1]
        out = self.compose(**data)
        new_image = out["image"]
        new_h, new_w = new_image.shape[:2]
        moved = _move_keypoints(kps, out, new_w, new_h) if kps is not None else None

        survived = np.asarray(out["instance_index"], dtype=np.int64).reshape(-1)
        boxes_of = dict(zip(survived.tolist(), _clip_boxes(np.asarray(out["bboxes"]).reshape(-1, 4), new_w, new_h)))
        masks_of = self._surviving_masks(out, masks, has_mask, areas, n, boxes_of)
        if moved is not None:  # instances that are only keypoints live while a point is in view
            for i in np.flatnonzero(~has_box & ~has_mask & (moved[..., 2] > 0).any(axis=1)).tolist():
                boxes_of[i] = np.zeros(4)
        kept = np.array(sorted(boxes_of), dtype=np.int64)
        return {
            "image": new_image,
            "masks": self._stack_masks(masks, masks_of, kept, new_h, new_w),
            "bboxes": np.array([boxes_of[i] for i in kept.tolist()], dtype=np.float32).reshape(-1, 4),
            "labels": labels[kept] if labels is not None else None,
            "keypoints": moved[kept] if moved is not None else None,
            "kept": kept,
        }

    def _surviving_masks(self, out: dict[str, Any], masks: np.ndarray | None, has_mask: np.ndarray,
                         areas: Any, n: int, boxes_of: dict[int, Any]) -> dict[int, np.ndarray]:
        """Warped masks that keep ``min_visibility`` of their pixels; their boxes go into ``boxes_of``."""
        masks_of: dict[int, np.ndarray] = {}
        if masks is None or not n:
            return masks_of
        masked = np.flatnonzero(has_mask)
        warped = bitmasks.unpack(out["mask"], masked.tolist())
        warped_boxes = bitmasks.packed_boxes(out["mask"], n)
        remaining = bitmasks.pixel_counts(warped)
        for k, i in enumerate(masked.tolist()):
            if remaining[k] and remaining[k] >= self.min_visibility * areas[i]:
                boxes_of[i], masks_of[i] = warped_boxes[i], warped[k]
        return masks_of

    @staticmethod
    def _stack_masks(masks: np.ndarray | None, masks_of: dict[int, np.ndarray], kept: np.ndarray,
                     height: int, width: int) -> np.ndarray | None:
        if masks is None:
            return None
        if not len(kept):
            return np.zeros((0, height, width), np.uint8)
        blank = np.zeros((height, width), np.uint8)  # box-only instances keep an empty mask
        return np.stack([masks_of.get(i, blank) for i in kept.tolist()])


#: Sample fields moved as keypoints whatever the plugins declare: the core's own.
CORE_FIELDS: dict[str, str] = {"keypoints": "keypoints"}


def _get_field(sample: Any, key: str) -> Any:
    if key.startswith("extra."):
        return (sample.get("extra") or {}).get(key[len("extra."):])
    return sample.get(key)


def _set_field(out: dict[str, Any], key: str, value: Any) -> None:
    if key.startswith("extra."):
        out["extra"][key[len("extra."):]] = value
    else:
        out[key] = value


class SampleAugmenter:
    """The training-time ``augment(sample, seed) -> sample`` callable.

    Deterministic for ``(sample, seed)``, picklable (DataLoader workers get a copy), and
    never modifies the input sample. Per-instance arrays (:data:`PER_INSTANCE_KEYS`)
    are re-indexed to the surviving instances; ``extra["augment_kept"]`` holds those
    input indices for plugins that keep their own per-instance data in ``extra``.

    :param fields: ``{sample field: role}`` the plugins declared through
        ``teacherkit_sample_fields`` (``PluginHost.sample_fields()``): ``"keypoints"``
        fields move with the image, ``"instances"`` fields are re-indexed.
        :data:`CORE_FIELDS` always apply.
    """

    def __init__(self, pipeline: AugmentationPipeline, fields: dict[str, str] | None = None):
        self.pipeline = pipeline
        self.fields = {**CORE_FIELDS, **(fields or {})}

    def __repr__(self) -> str:
        return f"SampleAugmenter({self.pipeline!r})"

    def __call__(self, sample: Sample, seed: int) -> Sample:
        masks = sample.get("masks")
        point_keys = [k for k, role in self.fields.items() if role == "keypoints" and _get_field(sample, k) is not None]
        arrays = [np.asarray(_get_field(sample, k), np.float32) for k in point_keys]
        n = len(sample.get("boxes") if sample.get("boxes") is not None else [])
        arrays = [a.reshape(n, -1, 3) if a.size else np.zeros((n, 0, 3), np.float32) for a in arrays]
        # one pass for every keypoint field, so all of them see the same random transform
        joined = np.concatenate(arrays, axis=1) if arrays else None
        result = self.pipeline(image=sample["image"], masks=masks, bboxes=sample.get("boxes"),
                               keypoints=joined, seed=seed)
        kept = result["kept"]
        out: dict[str, Any] = dict(sample)
        out["image"], out["boxes"] = result["image"], result["bboxes"]
        out["masks"] = result["masks"] if masks is not None else None
        for key in PER_INSTANCE_KEYS:
            if sample.get(key) is not None:
                out[key] = np.asarray(sample[key])[kept]
        out["extra"] = {**(sample.get("extra") or {}), "augment_kept": kept}
        for key, role in self.fields.items():
            if role == "instances" and _get_field(sample, key) is not None:
                _set_field(out, key, np.asarray(_get_field(sample, key))[kept])
        start = 0
        for key, array in zip(point_keys, arrays):
            _set_field(out, key, result["keypoints"][:, start:start + array.shape[1]])
            start += array.shape[1]
        if "keypoints" in point_keys and "keypoints" in out["extra"]:
            # the flat list older plugins read follows the moved points
            out["extra"]["keypoints"] = out["keypoints"].reshape(-1).tolist()
        return out  # type: ignore[return-value]
