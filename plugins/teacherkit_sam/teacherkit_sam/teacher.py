"""The SAM teacher: forward and predict on collated batches, the embedding cache,
persistence of adapters and of the tiny base, adapter scaling."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_replace_dir
from teacherkit.errors import TeacherkitError
from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec
from teacherkit_sam.loading import (
    ImageSettings,
    apply_finetuning,
    load_base,
    make_processor,
    set_attention,
    tuning_mode,
)
from teacherkit_sam.masks import mask_to_rle
from teacherkit_sam.preprocess import SamPreprocessor

log = logging.getLogger(__name__)

META_FILE = "teacherkit_sam.json"
DECODER_ONLY_FILE = "decoder_only.safetensors"
#: instances upsampled at once in predict(), bounding memory on images with many objects
PREDICT_CHUNK = 16


class SamAdapterError(TeacherkitError):
    """An adapter folder is missing or does not fit the loaded model."""


class SamTeacher(Teacher):
    """Built by :func:`build_teacher`; see ``docs/teachers/sam.md``."""

    def __init__(self, spec: TeacherSpec, config: Any, base: Any, settings: ImageSettings,
                 workdir: Path | None = None) -> None:
        import torch

        self.spec = spec
        self.config = config
        self.settings = settings
        self.workdir = Path(workdir) if workdir is not None else None
        self.mode = tuning_mode(config)
        # the tiny base exists only in memory: keep its weights so save_base() can write
        # them even after full fine-tuning has changed the model in place
        self._base_state = (
            {k: v.detach().clone() for k, v in base.state_dict().items()} if config.base == "tiny" else None
        )
        # teachers.sam.attention, also for a base not made by load_base (which applies it too;
        # a second application switches nothing)
        set_attention(base, config.attention)
        self.model = apply_finetuning(base, config)
        if config.gradient_checkpointing and "frozen" not in self.mode and self.mode != "decoder-only":
            # recompute encoder activations in backward: ViT-B LoRA at batch 8 takes 8.0 instead of
            # 17.4 GiB at 0.75x the speed (docs/performance.md)
            from teacherkit_sam.loading import enable_gradient_checkpointing

            enable_gradient_checkpointing(self.model)
        # base values of fully trained weights, for set_adapter_scale()
        self._base_full = {n: p.detach().to("cpu", copy=True) for n, p in self._full_params()}
        self._tuned_full: dict[str, torch.Tensor] | None = None
        self._scale = 1.0
        self._cache: Any = None

    # -- model parts ----------------------------------------------------------------------
    @property
    def sam(self) -> Any:
        """The underlying ``SamModel`` (inside the peft wrapper when there is one)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _full_params(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and "lora_" not in n]

    @property
    def uses_cache(self) -> bool:
        """True when the encoder cannot change (frozen) and caching is on."""
        if self.config.cache_embeddings == "off":
            return False
        return not any(p.requires_grad for p in self.sam.vision_encoder.parameters())

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from teacherkit_sam.cache import EmbeddingCache, encoder_fingerprint

            store = self.config.cache_embeddings
            directory = None
            if store == "disk":
                if self.workdir is None:
                    log.warning("no work folder for the disk embedding cache; caching in memory instead")
                    store = "memory"
                else:
                    name = encoder_fingerprint(self.sam.vision_encoder, self.make_preprocessor().preprocessing_id)
                    directory = self.workdir / "cache" / "sam-embeddings" / name
            self._cache = EmbeddingCache(store, directory, max_bytes=self.config.cache_memory_mb << 20)
        return self._cache

    def make_preprocessor(self) -> SamPreprocessor:
        c = self.config
        return SamPreprocessor(
            image_size=self.settings.size, mean=tuple(self.settings.mean), std=tuple(self.settings.std),
            prompt=c.prompt, box_jitter=c.box_jitter, box_jitter_max=c.box_jitter_max, num_points=c.num_points,
            num_negative_points=c.num_negative_points, max_instances=c.max_instances, seed=c.seed,
        )

    # -- training / inference -----------------------------------------------------------------
    def forward(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Run ``model`` (this teacher's module or its DDP wrapper) on a batch.

        With a cached encoder the wrapper is still called, with ``image_embeddings``
        instead of pixels, so DDP sees every forward it must synchronise."""
        kwargs: dict[str, Any] = {"multimask_output": bool(batch.get("multimask", False))}
        if batch.get("prompt_kind", "box") == "box":
            kwargs["input_boxes"] = batch["input_boxes"]
        else:
            kwargs["input_points"] = batch["input_points"]
            kwargs["input_labels"] = batch["input_labels"]
        pixels = batch["pixel_values"]
        if self.uses_cache:
            kwargs["image_embeddings"] = self.cache.embeddings(batch["cache_keys"], pixels, self._encode)
        else:
            kwargs["pixel_values"] = pixels
        out = model(**kwargs)
        return {"pred_masks": out.pred_masks, "iou_scores": out.iou_scores}

    def _encode(self, pixel_values: Any) -> Any:
        encoder = self.sam.vision_encoder
        dtype = next(encoder.parameters()).dtype
        return encoder(pixel_values.to(dtype)).last_hidden_state

    def predict(self, model: Any, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """One mask per ground-truth instance, prompted by its exact box, as COCO RLE at
        the original image size with the predicted IoU as score."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            out = self.forward(model, {**batch, "prompt_kind": "box", "multimask": False})
        logits, scores = out["pred_masks"][:, :, 0].float(), out["iou_scores"][:, :, 0].float()
        size = self.settings.size
        results: list[list[dict[str, Any]]] = []
        for i, ann_ids in enumerate(batch["annotation_ids"]):
            (h, w), (height, width) = batch["resized_sizes"][i], batch["orig_sizes"][i]
            entries = []
            n = len(ann_ids)  # slots past n are collate's padding
            for start in range(0, n, PREDICT_CHUNK):
                chunk = logits[i, start : min(start + PREDICT_CHUNK, n), None]
                # as SAM's own post-processing: to the padded input, crop, to the original
                up = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)[..., :h, :w]
                up = F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)
                masks = (up[:, 0] > 0).to(torch.uint8).cpu().numpy()
                for row, mask in enumerate(masks):
                    j = start + row
                    entries.append({
                        "image_id": int(batch["image_ids"][i]),
                        "annotation_id": int(ann_ids[j]),
                        "category_id": int(batch["category_ids"][i][j]),
                        "segmentation": mask_to_rle(mask),
                        "score": float(scores[i, j].clamp(0, 1)),
                    })
            results.append(entries)
        return results

    def on_epoch_start(self, epoch: int) -> None:
        if self._cache is not None:
            stats = self._cache.stats()
            log.info("sam embedding cache before epoch %d: %d hits, %d misses, %d entries",
                     epoch, stats["hits"], stats["misses"], stats["entries"])
            self._cache.reset_stats()

    # -- reports --------------------------------------------------------------------------
    def parameter_report(self) -> ParameterReport:
        total = trainable = 0
        detail: dict[str, int] = {}
        for name, param in self.model.named_parameters():
            if "original_module" in name:  # peft's frozen copy of a fully trained module
                continue
            count = param.numel()
            total += count if "lora_" not in name else 0
            if param.requires_grad:
                trainable += count
                group = next((g for g in ("vision_encoder", "prompt_encoder", "mask_decoder") if g in name), "other")
                group += ".lora" if "lora_" in name else ""
                detail[group] = detail.get(group, 0) + count
        return ParameterReport(total=total, trainable=trainable, mode=self.mode, detail=detail)

    # -- persistence ----------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"teacher": "sam", "tuning": self.mode, "image_size": self.settings.size, "base": self.config.base,
                "lora": self.config.lora.model_dump(mode="json")}

    def save_adapter(self, directory: Path) -> None:
        """LoRA: the peft adapter (``adapter_config.json`` + safetensors, a fully trained
        decoder inside it). Full: ``save_pretrained`` of the whole model. Decoder-only:
        the decoder's weights. The folder appears complete or not at all."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            if self.mode == "decoder-only":
                state = {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state_dict().items()}
                save_file(state, str(tmp / DECODER_ONLY_FILE))
            else:
                self.model.save_pretrained(str(tmp))
            (tmp / META_FILE).write_text(json.dumps(self._meta(), indent=2) + "\n", encoding="utf-8")
            atomic_replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load_adapter(self, directory: Path) -> None:
        """Restore what :meth:`save_adapter` wrote into this teacher (same tuning set-up)."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.exists():
            raise SamAdapterError(f"{directory}: not a SAM adapter folder ({META_FILE} is missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("tuning") != self.mode or meta.get("image_size") != self.settings.size:
            raise SamAdapterError(
                f"{directory}: adapter was trained as {meta.get('tuning')!r} at {meta.get('image_size')} px, but "
                f"the loaded teacher is {self.mode!r} at {self.settings.size} px; set teachers.sam.mode/finetune/"
                "train_decoder/image_size as at training"
            )
        if self.mode == "decoder-only":
            from safetensors.torch import load_file

            self.load_trainable_state_dict(load_file(str(directory / DECODER_ONLY_FILE)))
        elif self.mode in ("full", "frozen-encoder-full"):
            from transformers import SamModel

            loaded = SamModel.from_pretrained(str(directory), local_files_only=True)
            self.model.load_state_dict(loaded.state_dict())
        else:
            from peft.utils import load_peft_weights, set_peft_model_state_dict

            saved = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
            mine = self.model.peft_config["default"]
            if saved.get("r") != mine.r or saved.get("target_modules") != mine.target_modules:
                raise SamAdapterError(
                    f"{directory}: adapter has r={saved.get('r')}, targets {saved.get('target_modules')!r}; the "
                    f"model has r={mine.r}, targets {mine.target_modules!r}; use the lora settings of training"
                )
            result = set_peft_model_state_dict(self.model, load_peft_weights(str(directory), device="cpu"))
            if result.unexpected_keys:
                raise SamAdapterError(f"{directory}: unexpected tensors {result.unexpected_keys[:5]}")
        self._tuned_full = None
        self._scale = 1.0

    def save_base(self, directory: Path) -> None:
        """For the tiny preset: the random base (as at load time) plus a ``SamProcessor``,
        so ``teachers.sam.base=<directory>`` rebuilds the identical model."""
        if self._base_state is None:
            return
        from transformers import SamModel

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            base = SamModel(self.sam.config)
            base.load_state_dict(self._base_state)
            base.save_pretrained(str(tmp))
            make_processor(self.settings).save_pretrained(str(tmp))
            atomic_replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- base <-> tuned ---------------------------------------------------------------------
    def set_adapter_scale(self, scale: float) -> None:
        """0 = base, 1 = fine-tuned, in between interpolates: LoRA updates are scaled
        and fully trained weights move linearly between their base and tuned values.
        For evaluation only; set 1 again before training."""
        import torch

        scale = float(scale)
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            LoraLayer = ()  # type: ignore[assignment]
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    module.set_scale(adapter, scale)
        params = dict(self._full_params())
        with torch.no_grad():
            if self._tuned_full is None and scale != 1.0:
                self._tuned_full = {n: p.detach().clone() for n, p in params.items()}
            if self._tuned_full is not None:
                for name, param in params.items():
                    tuned = self._tuned_full[name]
                    base = self._base_full[name].to(param.device, param.dtype)
                    # scale 1 restores the exact tuned values, not a rounded interpolation
                    param.copy_(tuned if scale == 1.0 else base + scale * (tuned - base))
                if scale == 1.0:
                    self._tuned_full = None
        self._scale = scale


def build_teacher(spec: TeacherSpec, config: Any, workdir: Path | None = None) -> SamTeacher:
    """Load the base named by ``config.base`` and set it up for ``config``."""
    base, settings = load_base(config)
    return SamTeacher(spec, config, base, settings, workdir=workdir)
