"""Score teachers: the one metric dispatch (used by training each epoch and by
``teacherkit evaluate``), and scoring an experiment's teachers on a COCO file, fine-tuned
and base side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teacherkit.data.info import category_key as category_key  # re-exported
from teacherkit.errors import DataError
from teacherkit.evaluation.coco_metrics import STAT_NAMES


class NothingToScoreError(DataError):
    """The evaluation file has no images or no annotations: every metric would be undefined."""


class GroundTruth:
    """A ground-truth COCO dict with the indexes its metrics need, each built on first use
    and kept: training scores the same validation file every epoch."""

    def __init__(self, gt: dict[str, Any]) -> None:
        self.data = gt
        self._built: dict[str, Any] = {}

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def coco(self, iou_type: str) -> Any:
        from teacherkit.evaluation.coco_metrics import coco_ground_truth

        return self._get(iou_type, lambda: coco_ground_truth(self.data, iou_type))

    def masks(self) -> Any:
        from teacherkit.evaluation.mask_metrics import MaskTruth

        return self._get("masks", lambda: MaskTruth(self.data))


def metrics_for(teacher: Any, gt: dict[str, Any] | GroundTruth,
                predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of ``predictions`` against the COCO dict ``gt``.

    :param teacher: a :class:`~teacherkit.teachers.TeacherSpec` (its own ``metric`` when it
        declares one, else the built-in metric of its ``evaluation`` kind) or an evaluation
        kind (``"bbox"``, ``"prompted_mask"``, ``"none"``).
    :param gt: the COCO dict, or its :class:`GroundTruth` (indexes built once, reused).
    :returns: ``{}`` for a teacher that is not scored.
    """
    from teacherkit.evaluation import bbox_metrics, prompted_mask_metrics, segm_metrics

    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    metric = getattr(teacher, "metric", None)
    if metric is not None:
        return dict(metric(truth.data, predictions))
    kind = teacher if isinstance(teacher, str) else teacher.evaluation
    if kind == "bbox":
        return bbox_metrics(truth.data, predictions, coco_gt=truth.coco("bbox"))
    if kind == "prompted_mask":
        return {**prompted_mask_metrics(truth.masks(), predictions),
                **segm_metrics(truth.data, predictions, coco_gt=truth.coco("segm"))}
    return {}


def evaluator(teacher: Any, gt: dict[str, Any]) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """``evaluate(predictions) -> metrics`` of ``teacher`` on ``gt`` (see :func:`metrics_for`),
    the shape the training loop calls once per epoch; the ground truth's indexes are built
    on the first call and reused by the next ones."""
    truth = GroundTruth(gt)

    def evaluate(predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return metrics_for(teacher, truth, predictions)

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




def match_categories(experiment_info: Any, coco: Any, path: Path) -> dict[int, int]:
    """The file's category id → the experiment's id of the category with the same name.

    :raises DataError: a category the experiment was not trained on (with both names when
        the experiment has its id under another name), or two of the file's categories
        with one name.
    """
    by_name = {category_key(c["name"]): int(c["id"]) for c in experiment_info.categories}
    name_of = {int(c["id"]): str(c["name"]) for c in experiment_info.categories}
    mapping: dict[int, int] = {}
    for cat in coco.categories:
        target = by_name.get(category_key(cat.name))
        if target is None and cat.id in name_of:
            raise DataError(f"{path}: category id {cat.id} is {cat.name!r} in this file but {name_of[cat.id]!r} in "
                            f"the experiment's training data; categories are matched by name, so the teachers "
                            f"cannot score {cat.name!r}")
        if target is None:
            raise DataError(f"{path}: category {cat.name!r} (id {cat.id}) was not in the experiment's training "
                            f"data; its teachers only know {', '.join(experiment_info.class_names)}")
        if target in mapping.values():
            raise DataError(f"{path}: two categories are named {name_of[target]!r} (ignoring case and spacing)")
        mapping[cat.id] = target
    return mapping


def remap_categories(coco: Any, mapping: dict[int, int], experiment_info: Any) -> Any:
    """``coco`` with the experiment's category ids and names (:func:`match_categories`)."""
    import msgspec

    from teacherkit.data.coco import CocoDataset

    if all(source == target for source, target in mapping.items()):
        return coco
    names = {int(c["id"]): str(c["name"]) for c in experiment_info.categories}
    categories = [msgspec.structs.replace(cat, id=mapping[cat.id], name=names[mapping[cat.id]])
                  for cat in coco.categories]
    annotations = [msgspec.structs.replace(ann, category_id=mapping.get(ann.category_id, ann.category_id))
                   for ann in coco.annotations]
    return CocoDataset(coco.images, annotations, categories, path=coco.path, info=coco.info, licenses=coco.licenses)


def remap_notice(path: Path, coco: Any, mapping: dict[int, int]) -> str | None:
    """One line naming the categories whose ids differ from the experiment's, or ``None``."""
    moved = [f"{cat.name!r} {cat.id}->{mapping[cat.id]}" for cat in coco.categories if mapping[cat.id] != cat.id]
    if not moved:
        return None
    return (f"{path}: categories matched to the experiment's by name, with other ids: {', '.join(moved)} "
            f"(file id->experiment id)")


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


#: The recorded files ``evaluate`` falls back to without ``--data``, in the order tried.
RECORDED_SPLITS = ("test", "val")


def recorded_data(experiment: Any) -> tuple[str, Path, Path | None]:
    """The held-out file the experiment's ``metadata.json`` records (its test file when it
    has one, else its validation file): ``(split, path, image folder or None)``. A relative
    path is taken from the working folder, as training took it.

    :raises DataError: nothing recorded, or the recorded file is gone; both say to give ``--data``.
    """
    import json

    where = experiment.layout.metadata
    try:
        data = json.loads(where.read_text(encoding="utf-8")).get("data") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: cannot read the recorded data ({exc}); give --data") from None
    for split in RECORDED_SPLITS:
        entry = data.get(split)
        if isinstance(entry, dict) and entry.get("path"):
            path = Path(entry["path"])
            if not path.is_file() and entry.get("absolute"):  # training ran in another folder
                path = Path(entry["absolute"])
            if not path.is_file():
                raise DataError(f"{where}: the recorded {split} file {entry['path']} is not found from "
                                f"{Path.cwd()}; give --data")
            images = entry.get("images")
            return split, path, Path(images) if images else None
    raise DataError(f"{where}: the experiment records no validation or test file (trained without --val); "
                    f"give --data")


def base_kept_teachers(experiment: Any) -> set[str]:
    """Teachers whose training kept the base model as best (``base_kept`` in
    ``metadata.json``); an unreadable file names none (the scores still stand)."""
    import json

    try:
        teachers = json.loads(experiment.layout.metadata.read_text(encoding="utf-8")).get("teachers") or {}
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name, entry in teachers.items() if isinstance(entry, dict) and entry.get("base_kept")}


def _load_sets(experiment: Any, sets: dict[str, tuple[Path, Path]],
               notice: Callable[[str], None]) -> dict[str, tuple[Any, Path]]:
    """Each ``(COCO path, image folder)`` loaded, checked, with the experiment's category ids."""
    from teacherkit.data.coco import load_coco
    from teacherkit.data.image_files import check_image_paths

    loaded: dict[str, tuple[Any, Path]] = {}
    for key, (path, folder) in sets.items():
        flag = "--images" if key == "data" else "--reference-images"
        if not folder.is_dir():
            raise DataError(f"{flag} {folder}: not a folder (the images of {path})")
        coco = load_coco(path)
        check_scorable(coco, path)
        mapping = match_categories(experiment.info, coco, path)
        check_image_paths(coco.images, folder, source=path)
        message = remap_notice(path, coco, mapping)
        if message:
            notice(message)
        loaded[key] = (remap_categories(coco, mapping, experiment.info), folder)
    return loaded


def _write_pictures(where: Path, name: str, spec: Any, coco: Any, folder: Path, variant: str,
                    preds: list[dict[str, Any]], notice: Callable[[str], None]) -> None:
    """The prediction grid of one variant (``base``/``tuned``), as training draws it."""
    from teacherkit.reporting.paths import ReportPaths
    from teacherkit.reporting.pictures import EvaluationPictures

    try:
        EvaluationPictures(ReportPaths(where / name), coco.to_dict(), folder, spec.evaluation, name).write(
            preds, tag=variant)
    except Exception as exc:  # the scores matter more than a picture; say why it is missing
        notice(f"{name}: {variant} prediction grid not written: {type(exc).__name__}: {exc}")


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
    pictures: Path | None = None,
    notice: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{"teachers": {name: {"data": {"base": m, "tuned": m}, "reference": {...}}}}``;
    undefined stats are ``None`` (:func:`undefined_as_none`). Categories are matched to the
    experiment's by name (:func:`match_categories`).

    :param pictures: when given, the base and tuned prediction grids on ``data`` go to
        ``<pictures>/<teacher>/pictures/predictions_{base,tuned}.png``.
    :param notice: called with each line worth telling (categories remapped, a grid not drawn).
    :raises ExperimentError: the experiment has no trained teacher (or not the one asked for).
    :raises NothingToScoreError: ``data`` or ``reference`` has no images or no annotations.
    :raises DataError: a category the experiment does not know by that name.
    """
    tell = notice or (lambda _line: None)
    names = experiment.require_trained(teachers)
    sets = {"data": (Path(data), Path(images) if images else Path(data).parent)}
    if reference:
        sets["reference"] = (Path(reference), Path(reference_images) if reference_images else Path(reference).parent)
    loaded_sets = _load_sets(experiment, sets, tell)
    result: dict[str, Any] = {"experiment": str(experiment.path), "adapter_scale": adapter_scale,
                              "data": str(data), "reference": str(reference) if reference else None, "teachers": {}}
    kept = base_kept_teachers(experiment)
    for name in names:
        spec = experiment.host.teacher(name)
        entry: dict[str, Any] = {}
        if name in kept:
            entry["base_kept"] = True
            tell(f"{name}: no trained epoch beat the base on val, so training kept the base: 'tuned' predicts "
                 "as the base does")
        for variant, kwargs in (("base", {"adapter": False}), ("tuned", {"adapter_scale": adapter_scale})):
            loaded = experiment.teacher(name, **kwargs)
            for key, (coco, folder) in loaded_sets.items():
                preds = predictions_for(loaded, coco, folder, experiment.info, batch_size)
                gt = coco.to_dict()
                entry.setdefault(key, {})[variant] = undefined_as_none(metrics_for(spec, gt, preds), gt)
                if pictures is not None and key == "data":
                    _write_pictures(pictures, name, spec, coco, folder, variant, preds, tell)
            del loaded  # one copy of the model at a time
        result["teachers"][name] = entry
    return result
