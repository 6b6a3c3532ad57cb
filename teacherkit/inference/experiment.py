"""Load a trained experiment and predict with its teachers in a few lines::

    from teacherkit.inference import load_experiment

    exp = load_experiment("runs/exp1")
    results = exp.predict(["a.jpg", "b.jpg"])          # boxes, plus masks when SAM was trained
    for det in results[0]:
        print(det["category_name"], det["score"], det["bbox"])
    dets = exp.predict("c.jpg")                         # one image: its detections

The teachers are loaded by the first ``predict`` and kept: later calls reuse them
(``exp.unload()`` frees them). Library chatter (transformers' progress bars and logger
warnings, Python warnings) is silenced during ``predict``; ``quiet=False`` keeps it.

``exp.teacher("grounding_dino", adapter_scale=0.5)`` gives one teacher with its LoRA update
scaled (0 = base model, 1 = fine-tuned).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.errors import TeacherkitError
from teacherkit.types import Sample


class ExperimentError(TeacherkitError):
    exit_code = 2


#: What ``predict`` takes as one image.
ImageInput = str | Path | np.ndarray


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what libraries print on every load and forward pass: transformers' logger
    below ERROR, its and huggingface_hub's progress bars ("Loading weights"), and Python
    warnings. Restored on exit."""
    import warnings

    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class LoadedTeacher:
    """A teacher ready to predict: model on its device in eval mode, plus its preprocessor."""

    spec: Any
    teacher: Any
    preprocessor: Any
    config: Any
    device: Any

    def predict_samples(self, samples: Sequence[Sample]) -> list[list[dict[str, Any]]]:
        """Predictions for raw samples (one batch); see ``Teacher.predict``."""
        return self.predict_prepared([self.preprocessor(s, train=False) for s in samples])

    def predict_prepared(self, items: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Predictions for samples this teacher's preprocessor already made into inputs
        (``preprocessor(sample, train=False)``, e.g. in a DataLoader worker)."""
        import torch

        from teacherkit.data.samples import move_to_device

        batch = move_to_device(self.preprocessor.collate(list(items)), self.device)
        with torch.no_grad():
            return self.teacher.predict(self.teacher.model, batch)


def check_overrides(name: str, config: Any, overrides: dict[str, Any]) -> None:
    """Refuse prediction settings the teacher's config does not have or would not accept
    (``model_copy`` alone would take ``box_threshold=5`` without a word).

    :raises ExperimentError: naming the setting, the teacher and the reason.
    """
    if not overrides:
        return
    import pydantic

    fields = type(config).model_fields
    for key in overrides:
        if key not in fields:
            raise ExperimentError(f"{name}: has no prediction setting {key!r}")
    try:
        type(config).model_validate({**config.model_dump(), **overrides})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ExperimentError(f"{name}: {where}={first.get('input')!r}: {first['msg']}") from None


def empty_sample(image: np.ndarray, image_id: int, file_name: str = "") -> Sample:
    h, w = image.shape[:2]
    return {
        "image": image, "image_id": image_id, "file_name": file_name, "orig_size": (h, w),
        "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
        "category_ids": np.zeros(0, np.int64), "annotation_ids": np.zeros(0, np.int64),
        "iscrowd": np.zeros(0, np.int64), "masks": np.zeros((0, h, w), np.uint8),
        "keypoints": np.zeros((0, 0, 3), np.float32), "extra": {"seed": 0},
    }


def prompted_sample(image: np.ndarray, image_id: int, detections: Sequence[dict[str, Any]]) -> Sample:
    """A sample whose instances are ``detections`` (boxes in pixels), for prompting SAM;
    annotation ids are the detections' positions."""
    sample = empty_sample(image, image_id)
    h, w = image.shape[:2]
    n = len(detections)
    sample["boxes"] = np.asarray([d["bbox"] for d in detections], np.float32).reshape(-1, 4)
    sample["category_ids"] = np.asarray([d["category_id"] for d in detections], np.int64)
    sample["labels"] = np.zeros(n, np.int64)
    sample["annotation_ids"] = np.arange(n, dtype=np.int64)
    sample["iscrowd"] = np.zeros(n, np.int64)
    sample["masks"] = np.zeros((n, h, w), np.uint8)  # unused at prediction; the prompt is the box
    sample["keypoints"] = np.zeros((n, 0, 3), np.float32)
    return sample


class Experiment:
    """A trained experiment folder (paths in :class:`teacherkit.layout.ExperimentLayout`)."""

    def __init__(self, path: str | Path, host: Any = None, device: str | None = None, *,
                 quiet: bool = True) -> None:
        import json

        from teacherkit.config import load_config_yaml
        from teacherkit.data.info import DatasetInfo
        from teacherkit.layout import ExperimentLayout
        from teacherkit.plugins import get_plugin_manager

        self.path = Path(path)
        self.layout = ExperimentLayout(self.path)
        if not self.layout.config.is_file():
            raise ExperimentError(f"{self.path}: not a teacherkit experiment ({self.layout.config.name} is missing)")
        self.host = host or get_plugin_manager()
        self.config = load_config_yaml(self.host.config_model(), self.layout.config)
        self.info = DatasetInfo.from_dict(json.loads(self.layout.dataset_info.read_text(encoding="utf-8")))
        self.device = device
        self.quiet = quiet
        #: Teachers ``predict`` loaded, by name, with the adapter scale they were loaded at.
        self._kept: dict[str, tuple[float, LoadedTeacher]] = {}

    @property
    def teacher_names(self) -> list[str]:
        """Teachers with a saved adapter (trained at least one epoch), in training order."""
        trained = [n for n in self.layout.teacher_names() if self.layout.teacher(n).adapter.is_dir()]
        order = list(self.host.teachers())
        return sorted(trained, key=lambda n: order.index(n) if n in order else len(order))

    def require_trained(self, names: Sequence[str] | None = None) -> list[str]:
        """``names`` (default: every trained teacher), after checking each has a model.

        :raises ExperimentError: no teacher has a trained model, or one of ``names`` has none.
        """
        trained = self.teacher_names
        if not trained:
            untrained = [n for n in self.layout.teacher_names() if n not in trained]
            detail = (f"{', '.join(f'teachers/{n}' for n in untrained)} "
                      f"{'has' if len(untrained) == 1 else 'have'} no adapter" if untrained else "no teacher folder")
            raise ExperimentError(
                f"{self.path}: no trained model to use ({detail}); training stopped before a model was saved. "
                f"Continue it with 'teacherkit train ... --output {self.path} --resume'")
        installed = list(self.host.teachers())
        for name in names or []:
            if name not in installed:
                raise ExperimentError(f"--models {name!r}: not an installed teacher (installed: "
                                      f"{', '.join(installed) or 'none'}); trained in {self.path}: "
                                      f"{', '.join(trained)}")
            if name not in trained:
                raise ExperimentError(f"{self.path}: no trained teacher {name!r}; "
                                      f"this experiment has: {', '.join(trained)}")
        return list(names) if names else trained

    def find_teacher(self, evaluation: str) -> str | None:
        """The first trained teacher scored as ``evaluation`` (``"bbox"``, ``"prompted_mask"``)."""
        return next((n for n in self.teacher_names if self.host.teacher(n).evaluation == evaluation), None)

    def box_teacher_name(self, purpose: str = "prediction") -> str:
        """The teacher that finds boxes, which prediction and labelling start from.

        :raises ExperimentError: naming ``purpose`` and the teachers the experiment has.
        """
        self.require_trained()
        name = self.find_teacher("bbox")
        if name is None:
            raise ExperimentError(f"{self.path}: {purpose} needs a box teacher (e.g. grounding_dino); "
                                  f"this experiment has {', '.join(self.teacher_names) or 'none'}")
        return name

    def _device(self) -> Any:
        import torch

        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def teacher(self, name: str, *, adapter: bool = True, adapter_scale: float = 1.0,
                overrides: dict[str, Any] | None = None) -> LoadedTeacher:
        """Load one teacher. ``adapter=False`` gives the base model; ``adapter_scale``
        interpolates between base (0) and fine-tuned (1); ``overrides`` change prediction
        settings of the teacher's config section (thresholds, NMS)."""
        import torch

        self.require_trained([name])
        spec = self.host.teacher(name)
        paths = self.layout.teacher(name)
        tcfg = self.config.teacher(name)
        check_overrides(name, tcfg, overrides or {})
        update: dict[str, Any] = dict(overrides or {})
        if paths.base.is_dir():
            update["base"] = str(paths.base)
        tcfg = tcfg.model_copy(update=update)
        torch.manual_seed(self.config.training.seed)
        teacher = self.host.load_model(spec, tcfg, self.info, None)
        if adapter:
            teacher.load_adapter(paths.adapter)
            if adapter_scale != 1.0:
                teacher.set_adapter_scale(adapter_scale)
        elif adapter_scale != 1.0:
            raise ExperimentError("adapter_scale needs the adapter; use adapter=True")
        device = self._device()
        teacher.model.to(device)
        teacher.model.eval()
        preprocessor = self.host.make_preprocessor(spec, tcfg, teacher)
        return LoadedTeacher(spec, teacher, preprocessor, tcfg, device)

    def class_name(self, category_id: int) -> str:
        for cat in self.info.categories:
            if int(cat["id"]) == int(category_id):
                return str(cat["name"])
        return str(category_id)

    def kept_teacher(self, name: str, adapter_scale: float = 1.0) -> LoadedTeacher:
        """``name`` loaded once and kept for later calls (reloaded only for another
        ``adapter_scale``; one copy per teacher)."""
        kept = self._kept.get(name)
        if kept is None or kept[0] != adapter_scale:
            self._kept.pop(name, None)  # free the old copy before the new one is built
            self._kept[name] = (adapter_scale, self.teacher(name, adapter_scale=adapter_scale))
        return self._kept[name][1]

    def unload(self) -> None:
        """Forget the teachers ``predict`` kept (the next call loads them again)."""
        self._kept.clear()

    def predict(self, images: ImageInput | Iterable[ImageInput], *, adapter_scale: float = 1.0,
                batch_size: int = 4) -> Any:
        """Boxes from the box teacher, refined to masks by the mask teacher when the
        experiment has one. Each detection: ``bbox`` (xywh pixels), ``category_id``,
        ``category_name``, ``score``, and ``segmentation`` (COCO RLE) with SAM.

        :param images: one image (a path, or an ``[H, W, 3]`` uint8 array) or several.
        :returns: for one image its list of detections; for several, one list per image.
        """
        single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3)
        batch = [images] if single else list(images)
        with quiet_libraries() if self.quiet else nullcontext():
            out = self._predict(batch, adapter_scale, batch_size)
        return out[0] if single else out

    def _predict(self, images: list[ImageInput], adapter_scale: float, batch_size: int) -> list[list[dict[str, Any]]]:
        from teacherkit.data.samples import read_image

        boxes = self.kept_teacher(self.box_teacher_name("prediction"), adapter_scale)
        mask_name = self.find_teacher("prompted_mask")
        masks = self.kept_teacher(mask_name, adapter_scale) if mask_name else None
        pixels = [im if isinstance(im, np.ndarray) else read_image(Path(im)) for im in images]
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size]
            out.extend(predict_images(boxes, masks, chunk, range(start, start + len(chunk)), self.class_name))
        return out

    def mask_teacher(self, adapter_scale: float = 1.0) -> LoadedTeacher | None:
        """The mask teacher prompted by boxes, or ``None`` when the experiment has none."""
        name = self.find_teacher("prompted_mask")
        return self.teacher(name, adapter_scale=adapter_scale) if name else None


def predict_images(boxes: LoadedTeacher, masks: LoadedTeacher | None, images: Sequence[np.ndarray],
                   image_ids: Iterable[int], class_name: Any = str, *,
                   prepared: Sequence[dict[str, Any]] | None = None) -> list[list[dict[str, Any]]]:
    """Box teacher on ``images``, then (optionally) the mask teacher prompted by each box.
    ``prepared``: the box teacher's inputs of ``empty_sample(image, image_id)``, when they
    were made already (``teacherkit label``'s readers); the pixels are still needed for SAM."""
    ids = list(image_ids)
    if prepared is None:
        detections = boxes.predict_samples([empty_sample(img, i) for img, i in zip(images, ids, strict=True)])
    else:
        detections = boxes.predict_prepared(prepared)
    results: list[list[dict[str, Any]]] = []
    for img, image_id, dets in zip(images, ids, detections, strict=True):
        dets = [dict(d, category_name=class_name(d["category_id"])) for d in dets]
        if masks is not None:
            add_masks(masks, img, image_id, dets)
        results.append(dets)
    return results


def add_masks(masks: LoadedTeacher, image: np.ndarray, image_id: int, detections: list[dict[str, Any]]) -> None:
    """Prompt the mask teacher with every box of one image in one call and put each mask
    (``segmentation``, ``mask_score``) on its detection, in place."""
    if not detections:
        return
    prompted = masks.predict_samples([prompted_sample(image, image_id, detections)])[0]
    by_index = {p["annotation_id"]: p for p in prompted}
    for k, det in enumerate(detections):
        if k in by_index:
            det["segmentation"] = by_index[k]["segmentation"]
            det["mask_score"] = by_index[k]["score"]


def load_experiment(path: str | Path, host: Any = None, device: str | None = None, *,
                    quiet: bool = True) -> Experiment:
    """Open a trained experiment folder; its teachers load on the first ``predict`` and
    stay loaded (see :class:`Experiment`)."""
    return Experiment(path, host=host, device=device, quiet=quiet)
