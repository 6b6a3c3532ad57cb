"""The Grounding DINO teacher: what the core trainer calls.

Built by ``teacherkit_load_model``; holds the module being trained (a peft model in
LoRA mode, the transformers model in full mode), the tokenizer and the prompts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import GroundingDinoForObjectDetection

from teacherkit.adapters import AdapterError, AdapterMeta, AdapterScale, load_lora_weights, write_model_card
from teacherkit.atomic import atomic_dir
from teacherkit.data.info import DatasetInfo
from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec
from teacherkit_dino import encoder_guard, frozen_bf16, msda, sdpa
from teacherkit_dino.adapter import CARD_USAGE_FULL, CARD_USAGE_LORA, LEGACY_BOX_HEAD_FILE, copy_legacy_box_head
from teacherkit_dino.config import GroundingDinoConfig
from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.modeling import (
    LoadedBase,
    apply_finetune,
    box_head_parameters,
    load_base,
    parameter_groups,
    save_base,
)
from teacherkit_dino.postprocess import Candidates, score_chunk, to_detections
from teacherkit_dino.preprocess import GroundingDinoPreprocessor, finish_batch
from teacherkit_dino.prompts import PromptBuilder
from teacherkit_dino.tokenizer import token_ids

__all__ = ["AdapterError", "GroundingDinoTeacher"]

log = logging.getLogger(__name__)


class GroundingDinoTeacher(Teacher):
    """Grounding DINO fine-tuned on the dataset's classes (see ``docs/teachers/grounding_dino.md``)."""

    def __init__(self, spec: TeacherSpec, config: GroundingDinoConfig, dataset_info: DatasetInfo,
                 base: LoadedBase) -> None:
        self.spec = spec
        self.config = config
        self.dataset_info = dataset_info
        self.base = base
        self.hf_model: GroundingDinoForObjectDetection = base.model
        self.tokenizer = base.tokenizer
        self.max_text_len = min(config.max_text_len, int(self.hf_model.config.max_text_len))
        self.category_ids = [int(c["id"]) for c in dataset_info.categories]
        tokenizer = base.tokenizer
        self.prompts = PromptBuilder(
            dataset_info.class_names, self.category_ids, lambda text: token_ids(tokenizer, text),
            max_text_len=self.max_text_len, source=dataset_info.source,
        )
        self.model = apply_finetune(self.hf_model, config)
        self._scale = AdapterScale(self.model, self._base_weights)
        msda.install(self.hf_model, config.deformable_attention)
        sdpa.set_attention(self.hf_model, config.attention)
        encoder_guard.install(self.hf_model)  # same outputs, no host wait per encoder layer
        if config.frozen_precision == "bf16":
            parts = frozen_bf16.install(self.hf_model)
            log.info("grounding_dino: frozen parts stored and run in bf16: %s", ", ".join(parts) or "none "
                     "(every part has trained parameters; frozen_precision bf16 changes nothing)")

    # -- asked for by the core's default preprocessor and loss hooks ----------------------
    def make_preprocessor(self) -> GroundingDinoPreprocessor:
        """Resize and pad (uint8), and build each sample's prompt (see ``preprocess.py``);
        :meth:`forward` and :meth:`predict` normalise on the device."""
        return GroundingDinoPreprocessor(
            self.prompts, image_mean=self.base.image_mean, image_std=self.base.image_std,
            shortest_edge=self.config.shortest_edge, longest_edge=self.config.longest_edge,
        )

    def make_loss(self) -> GroundingDinoLoss:
        """transformers' Grounding DINO loss, with the matching costs and loss weights of
        this model's config."""
        return GroundingDinoLoss.from_model_config(self.hf_model.config)

    # -- training / inference -------------------------------------------------------------
    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The collated batch, on its device, with normalised ``pixel_values`` in the
        backbone's dtype and the ``pixel_mask`` (:func:`teacherkit_dino.preprocess.finish_batch`).
        Training, validation, evaluation and prediction all reach the model through
        :meth:`forward` or :meth:`predict`, which call it first."""
        backbone = self.hf_model.model.backbone
        dtype = next(backbone.parameters()).dtype
        return finish_batch(batch, self.base.image_mean, self.base.image_std, dtype)

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        batch = self.finish_batch(batch)
        with msda.shape_checks_off():  # twelve host waits per forward otherwise (see msda)
            return model(
                pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
            )

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Run every prompt chunk over the batch and merge (see :mod:`teacherkit_dino.postprocess`)."""
        cfg = self.config
        batch = self.finish_batch(batch)
        pixel_values = batch["pixel_values"]
        batch_size = pixel_values.shape[0]
        per_image = [Candidates([], [], []) for _ in range(batch_size)]
        was_training = model.training
        model.eval()
        try:
            for chunk in batch["prompt_chunks"]:
                ids = chunk["input_ids"].to(pixel_values.device).expand(batch_size, -1)
                with msda.shape_checks_off():
                    out = model(pixel_values=pixel_values, pixel_mask=batch["pixel_mask"], input_ids=ids,
                                attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
                box_score, phrase_score, phrase = score_chunk(out["logits"], ids.shape[1], chunk["spans"])
                classes = torch.as_tensor(chunk["classes"], device=phrase.device)[phrase]
                keep = (box_score >= cfg.box_threshold) & (phrase_score >= cfg.text_threshold)
                for i in range(batch_size):
                    per_image[i].boxes.append(out["pred_boxes"][i][keep[i]].float())
                    per_image[i].scores.append(phrase_score[i][keep[i]])
                    per_image[i].classes.append(classes[i][keep[i]])
        finally:
            model.train(was_training)
        return [
            to_detections(per_image[i], image_id=batch["image_ids"][i], orig_size=batch["orig_sizes"][i],
                          category_ids=self.category_ids, nms_iou=cfg.nms_iou, max_detections=cfg.max_detections)
            for i in range(batch_size)
        ]

    # -- reporting ---------------------------------------------------------------------------
    def parameter_report(self) -> ParameterReport:
        params = list(self.model.parameters())  # unique tensors: tied heads count once
        return ParameterReport(
            total=sum(p.numel() for p in params),
            trainable=sum(p.numel() for p in params if p.requires_grad),
            mode=self.config.finetune,
            detail=parameter_groups(self.model),
        )

    # -- persistence -------------------------------------------------------------------------
    def _meta(self) -> AdapterMeta:
        return AdapterMeta(
            teacher=self.spec.name, tuning=self.config.finetune, base=self.config.base,
            lora=self.config.lora.model_dump(mode="json") if self.config.finetune == "lora" else None,
            class_names=list(self.dataset_info.class_names), category_ids=self.category_ids,
            extra={"train_box_head": self.config.train_box_head,
                   "input_size": {"shortest_edge": self.config.shortest_edge,
                                  "longest_edge": self.config.longest_edge},
                   "prompt_chunks": [self.prompts.text(c) for c in self.prompts.chunks]},
        )

    def save_adapter(self, directory: Path) -> None:
        """LoRA: a standard peft adapter (``adapter_config.json``, ``adapter_model.safetensors``;
        the box head and unfrozen parts as ``modules_to_save``); full: the whole model and
        tokenizer with ``save_pretrained``. Either with ``teacherkit_adapter.json`` and a
        model card; the folder is whole or absent."""
        self.set_adapter_scale(1.0)
        meta = self._meta()
        info = self.dataset_info
        data = {"source": info.source, "images": info.num_images, "annotations": info.num_annotations}
        with atomic_dir(Path(directory)) as tmp:
            if self.config.finetune == "lora":
                self.model.save_pretrained(str(tmp))
                base = self.config.base
                # the tiny preset's random base is saved beside the adapter by the trainer
                base = "path/to/experiment/teachers/grounding_dino/base" if base == "tiny" else base
                usage = CARD_USAGE_LORA.replace("{base}", base)
            else:
                self.hf_model.save_pretrained(str(tmp))
                self.tokenizer.save_pretrained(str(tmp))
                usage = CARD_USAGE_FULL
            meta.write(tmp)
            write_model_card(tmp, meta, usage=usage, title="Grounding DINO teacher", data=data)

    def load_adapter(self, directory: Path) -> None:
        directory = Path(directory)
        meta = AdapterMeta.read(directory, what="teacherkit Grounding DINO adapter")
        meta.require(directory, "finetune", meta.tuning, self.config.finetune,
                     "set teachers.grounding_dino.finetune as at training")
        self.set_adapter_scale(1.0)
        if self.config.finetune == "lora":
            self._load_lora(directory)
        else:
            loaded = GroundingDinoForObjectDetection.from_pretrained(str(directory), local_files_only=True)
            self.hf_model.load_state_dict(loaded.state_dict())

    def _load_lora(self, directory: Path) -> None:
        legacy = directory / LEGACY_BOX_HEAD_FILE
        if not legacy.is_file():
            load_lora_weights(self.model, directory)
            return
        # an earlier version's layout: LoRA in peft's files, the box head beside them
        if not self.config.train_box_head:
            raise AdapterError(f"{directory}: holds a trained box head ({LEGACY_BOX_HEAD_FILE}); load it with "
                               "teachers.grounding_dino.train_box_head=true")
        load_lora_weights(self.model, directory, ignore=("modules_to_save",))
        copy_legacy_box_head(box_head_parameters(self.hf_model), legacy)

    def save_base(self, directory: Path) -> None:
        """For the ``tiny`` preset: the untrained base (regenerated from its seed, so
        training in place does not leak into it), tokenizer and image settings, so that
        ``base: <directory>`` reloads the identical base."""
        if self.config.base != "tiny":
            return
        names = list(self.base.extra.get("class_names", self.dataset_info.class_names))
        fresh = load_base(self.config, names)
        with atomic_dir(Path(directory)) as tmp:
            save_base(fresh, tmp)

    def save_processor(self, directory: Path) -> None:
        """A ``GroundingDinoProcessor`` (tokenizer and image processor) at the size this
        teacher trains and predicts at, for exports that transformers users load."""
        from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

        image = GroundingDinoImageProcessor(
            size={"shortest_edge": self.config.shortest_edge, "longest_edge": self.config.longest_edge},
            image_mean=list(self.base.image_mean), image_std=list(self.base.image_std),
        )
        GroundingDinoProcessor(image_processor=image, tokenizer=self.tokenizer).save_pretrained(str(directory))

    # -- adapter scale (issue 8: open-vocabulary retention) --------------------------------------
    def set_adapter_scale(self, scale: float) -> None:
        """Blend base (0.0) and fine-tuned (1.0) weights: LoRA layers through peft's scale,
        the trained box head (LoRA mode) or every weight (full mode) by interpolation
        (:class:`teacherkit.adapters.AdapterScale`)."""
        self._scale.set(scale)

    def _base_weights(self) -> dict[str, torch.Tensor]:
        """The untrained base's weights by name (full mode: every weight moves)."""
        names = list(self.base.extra.get("class_names", self.dataset_info.class_names))
        fresh = load_base(self.config, names).model
        return {n: p.detach() for n, p in fresh.named_parameters()}
