"""The contract between the core and teacher plugins.

The core never imports model code. A plugin declares a :class:`TeacherSpec`, builds a
:class:`Teacher` in ``teacherkit_load_model`` and supplies a :class:`Preprocessor` and
a loss. The trainer only ever talks to these interfaces, so a third-party teacher
(keypoints, say) trains through the same loop.

Nothing here imports torch at module level: ``teacherkit plugins`` must stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from pydantic import BaseModel

    from teacherkit.types import Sample

#: How a teacher's predictions are scored by :mod:`teacherkit.evaluation` when it does not
#: bring its own :attr:`TeacherSpec.metric`. ``"bbox"``: COCO box mAP of free detections.
#: ``"prompted_mask"``: one mask per ground-truth instance, prompted by its box, scored by
#: IoU/dice against that instance (and COCO mask mAP). ``"none"``: not scored.
EvaluationKind = Literal["bbox", "prompted_mask", "none"]

#: ``metric(gt, predictions) -> {"name": value, ...}``: ``gt`` is the COCO dict of the
#: evaluation file, ``predictions`` what :meth:`Teacher.predict` returned over it.
MetricFn = Callable[[dict[str, Any], Sequence[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher a plugin provides.

    :param name: unique name used on the command line and in the config
        (``grounding_dino``).
    :param learns_from: the annotation kind the teacher trains on (``"boxes"``); the
        teacher is chosen whenever that kind is present in the data.
    :param config_model: the pydantic model of its config section; must subclass
        :class:`teacherkit.config.TeacherConfig`.
    :param description: one line for ``teacherkit plugins`` and ``inspect``.
    :param evaluation: which built-in metric scores its predictions (when ``metric`` is
        not given).
    :param primary_metric: the metric that picks the best epoch (``"bbox_AP"``).
    :param metric_mode: whether ``primary_metric`` is better when larger or smaller.
    :param metric: the teacher's own scoring (a :data:`MetricFn`, a module-level function
        so it pickles); it replaces the built-in one of ``evaluation``. Training (each
        epoch) and ``teacherkit evaluate`` both call it through
        :func:`teacherkit.evaluation.run.metrics_for`.
    """

    name: str
    learns_from: str
    config_model: type[BaseModel]
    description: str = ""
    evaluation: EvaluationKind = "none"
    primary_metric: str = "loss"
    metric_mode: Literal["max", "min"] = "max"
    metric: MetricFn | None = None


@dataclass
class ParameterReport:
    """Total versus trainable parameters of a teacher, and how it is being tuned."""

    total: int
    trainable: int
    mode: str  # "lora", "full", "decoder-only", ...
    detail: dict[str, int] = field(default_factory=dict)  # trainable count per group

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def summary(self) -> str:
        return f"{self.mode}: {self.trainable:,} of {self.total:,} parameters trainable ({100 * self.fraction:.2f}%)"


@runtime_checkable
class Preprocessor(Protocol):
    """Turns one raw :class:`~teacherkit.types.Sample` into model inputs.

    It runs inside DataLoader workers, so it must be picklable and must not touch
    the GPU. ``collate`` stacks/pads a list of its outputs into one batch dict; the
    batch may keep non-tensor metadata (original sizes, image ids) for mapping
    predictions back to the original image. Everything in the batch crosses shared
    memory and the copy to the device, so ship it compact (uint8 pixels, sizes rather
    than per-pixel padding masks) and let :meth:`Teacher.forward` / :meth:`Teacher.predict`
    finish it on the device, as the built-in teachers do.
    """

    def __call__(self, sample: Sample, *, train: bool) -> dict[str, Any]: ...

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


#: ``loss(outputs, batch) -> {"loss": scalar, "<component>": scalar, ...}``
LossFn = Callable[[Any, dict[str, Any]], "dict[str, torch.Tensor]"]

#: ``augment(sample, seed) -> sample`` with boxes, masks and labels kept consistent; the
#: same sample and seed give the same result (the trainer derives the seed from the run
#: seed, the epoch and the sample index, so workers and resumes agree).
Augmentation = Callable[["Sample", int], "Sample"]


class Teacher:
    """A built teacher model. Plugins subclass this.

    ``model`` is the module the trainer optimises (a peft model for LoRA). The
    trainer may wrap it (DDP through accelerate), so methods that run it take the
    module to call as an argument instead of using ``self.model`` directly.
    """

    spec: TeacherSpec
    model: torch.nn.Module

    # -- what the built-in default hooks ask for -------------------------------------
    def make_preprocessor(self) -> Preprocessor:
        """The preprocessor of this teacher. The core's ``trylast`` implementation of
        ``teacherkit_make_preprocessor`` calls it, so a teacher plugin that defines it
        needs no hook of its own (a plugin's hook still wins)."""
        raise NotImplementedError

    def make_loss(self) -> LossFn:
        """The loss of this teacher (``loss(outputs, batch) -> {"loss": ..., parts}``);
        called by the core's ``trylast`` ``teacherkit_make_loss``, as above."""
        raise NotImplementedError

    # -- training / inference -------------------------------------------------------
    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        """Run ``model`` (``self.model`` or its wrapper) on a collated batch; the
        result goes to the loss function. The batch is what ``collate`` returned, moved
        to the device: this method (and :meth:`predict`) is where device-side
        preparation (normalising uint8 pixels, building padding masks) happens."""
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Predictions for each image of the batch, in original image pixels.

        ``bbox`` teachers return COCO detections
        (``image_id, category_id, bbox [x, y, w, h], score``); ``prompted_mask``
        teachers return one entry per ground-truth instance of the batch with
        ``image_id, annotation_id, category_id, segmentation`` (COCO RLE) and
        ``score``.
        """
        raise NotImplementedError

    # -- persistence ----------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters the optimiser updates, by name (what checkpoints store)."""
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors produced by :meth:`trainable_state_dict` (strict on names)."""
        params = dict(self.model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        unexpected = [n for n in state if n not in params]
        if missing or unexpected:
            raise KeyError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        import torch

        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def save_adapter(self, directory: Path) -> None:
        """Save what a user keeps (the PEFT adapter, or the full model when fully
        fine-tuned) so :meth:`load_adapter` restores it."""
        raise NotImplementedError

    def load_adapter(self, directory: Path) -> None:
        raise NotImplementedError

    def save_base(self, directory: Path) -> None:
        """Save the base model (and tokenizer/processor) when it cannot be re-obtained
        by name, as for the ``tiny`` preset. Default: nothing to save."""

    def parameter_report(self) -> ParameterReport:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return ParameterReport(total=total, trainable=trainable, mode="custom")

    def set_adapter_scale(self, scale: float) -> None:
        """Interpolate between the base model (0.0) and the fine-tuned one (1.0)."""
        raise NotImplementedError(f"{type(self).__name__} does not support adapter scaling")

    # -- hooks around the loop --------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (a teacher may switch caches)."""

    def augmentation_views(self) -> int | None:
        """How many augmented views of each training image to cycle through: ``K`` makes
        epoch ``e`` augment with the seed of epoch ``e % K`` (prompts and other per-epoch
        randomness still change every epoch); ``None`` (the default) draws a fresh view
        every epoch. A teacher that caches its frozen encoder's output asks for a few, or
        no encoder input would ever repeat under augmentation."""
        return None


@dataclass(frozen=True)
class CharacteristicSpec:
    """One augmentation characteristic or environment fact.

    :param name: ``"reflective_surface"`` or, for environment facts, ``"lighting"``.
    :param group: ``"object"`` for object traits, ``"environment"`` for facts that take
        a value.
    :param why: one line saying why it helps.
    :param values: the allowed values of an environment fact (``("fixed", "variable")``);
        empty for object traits.
    :param build: ``build(value, intensity) -> list`` of albumentations transforms;
        ``value`` is ``None`` for object traits, ``intensity`` one of
        ``"low" | "medium" | "high"``.
    :param plugin: filled in by the registry with the contributing plugin's name.
    """

    name: str
    group: Literal["object", "environment"]
    why: str
    build: Callable[[str | None, str], list[Any]]
    values: tuple[str, ...] = ()
    plugin: str = ""
