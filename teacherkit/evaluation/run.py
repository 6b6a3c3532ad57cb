"""Score an experiment's teachers on a COCO file: fine-tuned and base side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teacherkit.errors import DataError


def predictions_for(loaded: Any, coco: Any, images_dir: Path, info: Any, batch_size: int = 4) -> list[dict[str, Any]]:
    """Every prediction of ``loaded`` over ``coco`` (ground-truth prompts where the teacher
    needs them)."""
    import torch
    from torch.utils.data import DataLoader

    from teacherkit.training.dataset import CocoTrainDataset, move_to_device

    spec = loaded.spec
    dataset = CocoTrainDataset(coco, images_dir, info, loaded.preprocessor, learns_from=spec.learns_from,
                               train=False, with_masks=spec.learns_from == "masks")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=loaded.preprocessor.collate,
                        num_workers=0)
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in loader:
            for per_image in loaded.teacher.predict(loaded.teacher.model, move_to_device(batch, loaded.device)):
                out.extend(per_image)
    return out


def metrics_for(kind: str, gt: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, Any]:
    from teacherkit.evaluation import bbox_metrics, prompted_mask_metrics, segm_metrics

    if kind == "bbox":
        return bbox_metrics(gt, predictions)
    if kind == "prompted_mask":
        return {**prompted_mask_metrics(gt, predictions), **segm_metrics(gt, predictions)}
    return {}


def check_categories(experiment_info: Any, coco: Any, path: Path) -> None:
    unknown = sorted({c.id for c in coco.categories} - set(experiment_info.class_mapping))
    if unknown:
        raise DataError(f"{path}: categories {unknown} were not in the experiment's training data; "
                        f"its teachers only know {', '.join(experiment_info.class_names)}")


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
    """``{"teachers": {name: {"data": {"base": m, "tuned": m}, "reference": {...}}}}``."""
    from teacherkit.data.coco import load_coco

    sets = {"data": (Path(data), Path(images) if images else Path(data).parent)}
    if reference:
        sets["reference"] = (Path(reference), Path(reference_images) if reference_images else Path(reference).parent)
    loaded_sets = {}
    for key, (path, folder) in sets.items():
        coco = load_coco(path)
        check_categories(experiment.info, coco, path)
        loaded_sets[key] = (coco, folder)
    result: dict[str, Any] = {"experiment": str(experiment.path), "adapter_scale": adapter_scale,
                              "data": str(data), "reference": str(reference) if reference else None, "teachers": {}}
    for name in teachers or experiment.teacher_names:
        spec = experiment.host.teacher(name)
        entry: dict[str, Any] = {}
        for variant, kwargs in (("base", {"adapter": False}), ("tuned", {"adapter_scale": adapter_scale})):
            loaded = experiment.teacher(name, **kwargs)
            for key, (coco, folder) in loaded_sets.items():
                preds = predictions_for(loaded, coco, folder, experiment.info, batch_size)
                entry.setdefault(key, {})[variant] = metrics_for(spec.evaluation, coco.to_dict(), preds)
        result["teachers"][name] = entry
    return result
