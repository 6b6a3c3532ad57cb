"""Score teachers: the one metric dispatch (used by training each epoch and by
``teacherkit evaluate``), and scoring an experiment's teachers on a COCO file, fine-tuned
and base side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError
from teacherkit.evaluation.coco_metrics import STAT_NAMES


class NothingToScoreError(DataError):
    """The evaluation file has no images or no annotations: every metric would be undefined."""


def metrics_for(teacher: Any, gt: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of ``predictions`` against the COCO dict ``gt``.

    :param teacher: a :class:`~teacherkit.teachers.TeacherSpec` (its own ``metric`` when it
        declares one, else the built-in metric of its ``evaluation`` kind) or an evaluation
        kind (``"bbox"``, ``"prompted_mask"``, ``"none"``).
    :returns: ``{}`` for a teacher that is not scored.
    """
    from teacherkit.evaluation import bbox_metrics, prompted_mask_metrics, segm_metrics

    metric = getattr(teacher, "metric", None)
    if metric is not None:
        return dict(metric(gt, predictions))
    kind = teacher if isinstance(teacher, str) else teacher.evaluation
    if kind == "bbox":
        return bbox_metrics(gt, predictions)
    if kind == "prompted_mask":
        return {**prompted_mask_metrics(gt, predictions), **segm_metrics(gt, predictions)}
    return {}


def evaluator(teacher: Any, gt: dict[str, Any]) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """``evaluate(predictions) -> metrics`` of ``teacher`` on ``gt`` (see :func:`metrics_for`),
    the shape the training loop calls once per epoch."""

    def evaluate(predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return metrics_for(teacher, gt, predictions)

    return evaluate


def predictions_for(loaded: Any, coco: Any, images_dir: Path, info: Any, batch_size: int = 4) -> list[dict[str, Any]]:
    """Every prediction of ``loaded`` over ``coco`` (ground-truth prompts where the teacher
    needs them)."""
    import torch
    from torch.utils.data import DataLoader

    from teacherkit.data.samples import SampleDataset, move_to_device

    spec = loaded.spec
    dataset = SampleDataset(coco, images_dir, info, loaded.preprocessor, learns_from=spec.learns_from,
                            train=False, with_masks=spec.learns_from == "masks")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=loaded.preprocessor.collate,
                        num_workers=0)
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in loader:
            for per_image in loaded.teacher.predict(loaded.teacher.model, move_to_device(batch, loaded.device)):
                out.extend(per_image)
    return out


def check_categories(experiment_info: Any, coco: Any, path: Path) -> None:
    unknown = sorted({c.id for c in coco.categories} - set(experiment_info.class_mapping))
    if unknown:
        raise DataError(f"{path}: categories {unknown} were not in the experiment's training data; "
                        f"its teachers only know {', '.join(experiment_info.class_names)}")


def check_scorable(coco: Any, path: Path) -> None:
    """Refuse a file every metric would be undefined on (COCOeval answers -1, which must
    never be shown as a score of 0)."""
    if not coco.images:
        raise NothingToScoreError(f"{path}: nothing to score: the file has no images")
    if not coco.annotations:
        raise NothingToScoreError(f"{path}: nothing to score: the file has no annotations")


#: COCOeval's area ranges of the size-split stats (an object counts where lo <= area <= hi).
_AREA_RANGES = {"s": (0.0, 32.0**2), "m": (32.0**2, 96.0**2), "l": (96.0**2, 1e10)}


def _gt_areas(gt: dict[str, Any], prefix: str) -> list[float]:
    """Areas of the ground truth COCOeval scores for ``prefix`` (crowds are ignored by it)."""
    areas = []
    for ann in gt.get("annotations", []):
        if ann.get("iscrowd") or (prefix == "segm" and not ann.get("segmentation")):
            continue
        area = ann.get("area")
        if area is None and ann.get("bbox"):
            area = float(ann["bbox"][2]) * float(ann["bbox"][3])
        areas.append(float(area or 0.0))
    return areas


def undefined_as_none(metrics: dict[str, Any], gt: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` for people to read: a headline stat COCOeval leaves undefined (its -1,
    e.g. ``APs`` when no object is small; every stat when there is nothing to score) is
    ``None`` instead of the 0 the training loop keeps, so a table shows it as a dash."""
    out = dict(metrics)
    for prefix in ("bbox", "segm"):
        if f"{prefix}_AP" not in out:
            continue
        areas = _gt_areas(gt, prefix)
        for name in STAT_NAMES:
            size = name[-1] if name[-1] in _AREA_RANGES else None
            lo, hi = _AREA_RANGES[size] if size else (float("-inf"), float("inf"))
            if not any(lo <= a <= hi for a in areas):
                out[f"{prefix}_{name}"] = None
    return out


def _load_sets(experiment: Any, data: Path, images: Path | None, reference: Path | None,
               reference_images: Path | None) -> dict[str, tuple[Any, Path]]:
    from teacherkit.data.coco import load_coco
    from teacherkit.data.image_files import check_image_paths

    sets = {"data": (Path(data), Path(images) if images else Path(data).parent)}
    if reference:
        sets["reference"] = (Path(reference), Path(reference_images) if reference_images else Path(reference).parent)
    loaded: dict[str, tuple[Any, Path]] = {}
    for key, (path, folder) in sets.items():
        flag = "--images" if key == "data" else "--reference-images"
        if not folder.is_dir():
            raise DataError(f"{flag} {folder}: not a folder (the images of {path})")
        coco = load_coco(path)
        check_scorable(coco, path)
        check_categories(experiment.info, coco, path)
        check_image_paths(coco.images, folder, source=path)
        loaded[key] = (coco, folder)
    return loaded


def evaluate_experiment(
    experiment: Any,
    data: Path,
    images: Path | None = None,
    *,
    reference: Path | None = None,
    reference_images: Path | None = None,
    adapter_scale: float = 1.0,
    batch_size: int = 4,
    teachers: list[str] | None = None,
) -> dict[str, Any]:
    """``{"teachers": {name: {"data": {"base": m, "tuned": m}, "reference": {...}}}}``;
    undefined stats are ``None`` (:func:`undefined_as_none`).

    :raises ExperimentError: the experiment has no trained teacher (or not the one asked for).
    :raises NothingToScoreError: ``data`` or ``reference`` has no images or no annotations.
    """
    names = experiment.require_trained(teachers)
    loaded_sets = _load_sets(experiment, data, images, reference, reference_images)
    result: dict[str, Any] = {"experiment": str(experiment.path), "adapter_scale": adapter_scale,
                              "data": str(data), "reference": str(reference) if reference else None, "teachers": {}}
    for name in names:
        spec = experiment.host.teacher(name)
        entry: dict[str, Any] = {}
        for variant, kwargs in (("base", {"adapter": False}), ("tuned", {"adapter_scale": adapter_scale})):
            loaded = experiment.teacher(name, **kwargs)
            for key, (coco, folder) in loaded_sets.items():
                preds = predictions_for(loaded, coco, folder, experiment.info, batch_size)
                gt = coco.to_dict()
                entry.setdefault(key, {})[variant] = undefined_as_none(metrics_for(spec, gt, preds), gt)
        result["teachers"][name] = entry
    return result
