"""The Grounding DINO teacher: what the core trainer calls.

Built by ``teacherkit_load_model``; holds the module being trained (a peft model in
LoRA mode, the transformers model in full mode), the tokenizer and the prompts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from teacherkit.atomic import atomic_replace_dir, atomic_write_json
from teacherkit.data.info import DatasetInfo
from teacherkit.errors import TeacherkitError
from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec
from teacherkit_dino import msda, sdpa
from teacherkit_dino.config import GroundingDinoConfig
from teacherkit_dino.modeling import (
    LoadedBase,
    TeacherGroundingDino,
    apply_finetune,
    box_head_parameters,
    load_base,
    parameter_groups,
    save_base,
)
from teacherkit_dino.postprocess import Candidates, score_chunk, to_detections
from teacherkit_dino.preprocess import GroundingDinoPreprocessor
from teacherkit_dino.prompts import PromptBuilder
from teacherkit_dino.tokenizer import token_ids

ADAPTER_META = "teacherkit_adapter.json"
BOX_HEAD_FILE = "box_head.safetensors"


class AdapterError(TeacherkitError):
    """A saved adapter does not match this teacher (mode, LoRA shape, files)."""


class GroundingDinoTeacher(Teacher):
    """Grounding DINO fine-tuned on the dataset's classes (see ``docs/teachers/grounding_dino.md``)."""

    def __init__(self, spec: TeacherSpec, config: GroundingDinoConfig, dataset_info: DatasetInfo,
                 base: LoadedBase) -> None:
        self.spec = spec
        self.config = config
        self.dataset_info = dataset_info
        self.base = base
        self.hf_model: TeacherGroundingDino = base.model
        self.tokenizer = base.tokenizer
        self.max_text_len = min(config.max_text_len, int(self.hf_model.config.max_text_len))
        self.category_ids = [int(c["id"]) for c in dataset_info.categories]
        tokenizer = base.tokenizer
        self.prompts = PromptBuilder(
            dataset_info.class_names, self.category_ids, lambda text: token_ids(tokenizer, text),
            max_text_len=self.max_text_len, source=dataset_info.source,
        )
        lora_head = config.finetune == "lora" and config.train_box_head
        # The untouched box head, so adapter scale 0 can give the base model back.
        self._box_head_base = (
            {n: p.detach().clone() for n, p in box_head_parameters(self.hf_model).items()} if lora_head else {}
        )
        self._scale = 1.0
        self._tuned_snapshot: dict[str, torch.Tensor] = {}
        self.model = apply_finetune(self.hf_model, config)
        msda.install(self.hf_model, config.deformable_attention)
        sdpa.set_attention(self.hf_model, config.attention)

    # -- pieces for the hooks -------------------------------------------------------------
    def make_preprocessor(self) -> GroundingDinoPreprocessor:
        return GroundingDinoPreprocessor(
            self.prompts, image_mean=self.base.image_mean, image_std=self.base.image_std,
            shortest_edge=self.config.shortest_edge, longest_edge=self.config.longest_edge,
        )

    # -- training / inference -------------------------------------------------------------
    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        with msda.shape_checks_off():  # twelve host waits per forward otherwise (see msda)
            return model(
                pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
            )

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Run every prompt chunk over the batch and merge (see :mod:`teacherkit_dino.postprocess`)."""
        cfg = self.config
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
    def _meta(self) -> dict[str, Any]:
        return {
            "teacher": self.spec.name, "finetune": self.config.finetune, "base": self.config.base,
            "train_box_head": self.config.train_box_head, "lora": self.config.lora.model_dump(),
            "class_names": list(self.dataset_info.class_names), "category_ids": self.category_ids,
            "prompt_chunks": [self.prompts.text(c) for c in self.prompts.chunks],
        }

    def save_adapter(self, directory: Path) -> None:
        """LoRA: peft ``save_pretrained`` (``adapter_model.safetensors``) plus the trained box
        head in ``box_head.safetensors``; full: the whole model with ``save_pretrained``.
        Written to a sibling folder and moved into place, so the folder is whole or absent."""
        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.set_adapter_scale(1.0)
        if self.config.finetune == "lora":
            from safetensors.torch import save_file

            self.model.save_pretrained(str(tmp))
            if self.config.train_box_head:
                head = {n: p.detach().cpu().contiguous() for n, p in box_head_parameters(self.hf_model).items()}
                save_file(head, str(tmp / BOX_HEAD_FILE))
        else:
            self.hf_model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / ADAPTER_META, self._meta(), indent=2)
        atomic_replace_dir(tmp, directory)

    def load_adapter(self, directory: Path) -> None:
        directory = Path(directory)
        meta_path = directory / ADAPTER_META
        if not meta_path.is_file():
            raise AdapterError(f"{directory}: not a teacherkit Grounding DINO adapter ({ADAPTER_META} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("finetune") != self.config.finetune:
            raise AdapterError(
                f"{directory}: saved with finetune={meta.get('finetune')!r}, but this teacher uses "
                f"teachers.grounding_dino.finetune={self.config.finetune!r}"
            )
        self.set_adapter_scale(1.0)
        if self.config.finetune == "lora":
            self._load_lora(directory)
        else:
            loaded = TeacherGroundingDino.from_pretrained(str(directory), local_files_only=True)
            self.hf_model.load_state_dict(loaded.state_dict())

    def _load_lora(self, directory: Path) -> None:
        from peft.utils import load_peft_weights, set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_peft_weights(str(directory), device="cpu")
        result = set_peft_model_state_dict(self.model, weights, adapter_name="default")
        missing_lora = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing_lora:
            raise AdapterError(
                f"{directory}: adapter does not fit this model (LoRA rank or targets differ?): "
                f"missing {missing_lora[:3]}, unexpected {list(result.unexpected_keys)[:3]}"
            )
        head_file = directory / BOX_HEAD_FILE
        if self.config.train_box_head:
            if not head_file.is_file():
                raise AdapterError(f"{directory}: {BOX_HEAD_FILE} missing but train_box_head is on")
            head = load_file(str(head_file))
            params = box_head_parameters(self.hf_model)
            if set(head) != set(params):
                raise AdapterError(f"{directory}/{BOX_HEAD_FILE}: box head parameters do not match the model")
            with torch.no_grad():
                for name, tensor in head.items():
                    params[name].copy_(tensor)

    def save_base(self, directory: Path) -> None:
        """For the ``tiny`` preset: the untrained base (regenerated from its seed, so
        training in place does not leak into it), tokenizer and image settings, so that
        ``base: <directory>`` reloads the identical base."""
        if self.config.base != "tiny":
            return
        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        names = list(self.base.extra.get("class_names", self.dataset_info.class_names))
        fresh = load_base(self.config, names)
        save_base(fresh, tmp)
        atomic_replace_dir(tmp, directory)

    # -- adapter scale (issue 8: open-vocabulary retention) --------------------------------------
    def set_adapter_scale(self, scale: float) -> None:
        """Blend base (0.0) and fine-tuned (1.0) weights: LoRA layers through peft's scale,
        the trained box head (LoRA mode) or every weight (full mode) by interpolation."""
        scale = float(scale)
        if scale == self._scale:
            return
        if self.config.finetune == "lora":
            from peft.tuners.lora import LoraLayer

            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    module.set_scale("default", scale)
            self._blend(box_head_parameters(self.hf_model), self._box_head_base, scale)
        else:
            base_state = getattr(self, "_full_base_state", None)
            if base_state is None:
                names = list(self.base.extra.get("class_names", self.dataset_info.class_names))
                fresh = load_base(self.config, names).model
                base_state = self._full_base_state = dict(fresh.named_parameters())
            self._blend(dict(self.hf_model.named_parameters()), base_state, scale)
        self._scale = scale

    def _blend(self, params: dict[str, torch.nn.Parameter], base: dict[str, torch.Tensor], scale: float) -> None:
        if not base:
            return
        if self._scale == 1.0:  # leaving the tuned weights: remember them exactly
            self._tuned_snapshot = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for name, param in params.items():
                tuned = self._tuned_snapshot[name]
                if scale == 1.0:
                    param.copy_(tuned)
                else:
                    ref = base[name].to(param.device, param.dtype)
                    param.copy_(ref + scale * (tuned - ref))
