"""Score teachers: the one metric dispatch (used by training each epoch and by
``teacherkit evaluate``), and scoring an experiment's teachers on a COCO file, fine-tuned
and base side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError


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


def _load_sets(experiment: Any, data: Path, images: Path | None, reference: Path | None,
               reference_images: Path | None) -> dict[str, tuple[Any, Path]]:
    from teacherkit.data.coco import load_coco

    sets = {"data": (Path(data), Path(images) if images else Path(data).parent)}
    if reference:
        sets["reference"] = (Path(reference), Path(reference_images) if reference_images else Path(reference).parent)
    loaded: dict[str, tuple[Any, Path]] = {}
    for key, (path, folder) in sets.items():
        coco = load_coco(path)
        check_scorable(coco, path)
        check_categories(experiment.info, coco, path)
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
    """``{"teachers": {name: {"data": {"base": m, "tuned": m}, "reference": {...}}}}``.

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
                entry.setdefault(key, {})[variant] = metrics_for(spec, coco.to_dict(), preds)
        result["teachers"][name] = entry
    return result
