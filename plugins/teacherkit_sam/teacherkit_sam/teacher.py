"""The SAM teacher: forward and predict on collated batches, the embedding cache,
persistence of adapters and of the tiny base, adapter scaling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from teacherkit.adapters import AdapterError, AdapterMeta, AdapterScale, load_lora_weights, write_model_card
from teacherkit.atomic import atomic_dir
from teacherkit.data.masks import mask_to_rle
from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec
from teacherkit_sam.cached_encoder import CachedEncoder
from teacherkit_sam.loading import (
    ImageSettings,
    apply_finetuning,
    load_base,
    make_processor,
    set_attention,
    tuning_mode,
)
from teacherkit_sam.loss import SamLoss
from teacherkit_sam.preprocess import SamPreprocessor, finish_pixels

log = logging.getLogger(__name__)

DECODER_ONLY_FILE = "decoder_only.safetensors"
#: instances upsampled at once in predict(), bounding memory on images with many objects
PREDICT_CHUNK = 16


#: earlier name of :class:`teacherkit.adapters.AdapterError`, kept for callers
SamAdapterError = AdapterError


class SamTeacher(CachedEncoder, Teacher):
    """Built by :func:`build_teacher`; see ``docs/teachers/sam.md``."""

    def __init__(self, spec: TeacherSpec, config: Any, base: Any, settings: ImageSettings,
                 workdir: Path | None = None) -> None:

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
        # base values of weights trained in place (not inside peft's modules_to_save, whose
        # wrapper keeps the original), for set_adapter_scale()
        base_full = {n: p.detach().to("cpu", copy=True) for n, p in self._full_params() if ".modules_to_save." not in n}
        self._scale = AdapterScale(self.model, lambda: base_full)

    # -- model parts ----------------------------------------------------------------------
    @property
    def sam(self) -> Any:
        """The underlying ``SamModel`` (inside the peft wrapper when there is one)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _full_params(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and "lora_" not in n]

    @property
    def encoder_frozen(self) -> bool:
        """True when no image-encoder weight trains (``mode: frozen_encoder``)."""
        return not any(p.requires_grad for p in self.sam.vision_encoder.parameters())

    @property
    def uses_cache(self) -> bool:
        """True when the encoder cannot change (frozen) and caching is on."""
        return self.config.cache_embeddings != "off" and self.encoder_frozen

    def augmentation_views(self) -> int | None:
        """Augmented views per training image the trainer should cycle through (epoch
        ``e`` augments with the seed of epoch ``e % views``), or ``None`` for a fresh
        view every epoch. Only a cached frozen encoder asks for it: with a fresh view
        every epoch no encoder input repeats and the cache never hits."""
        views = self.config.cache_views
        return views if views > 0 and self.uses_cache else None

    def make_preprocessor(self) -> SamPreprocessor:
        c = self.config
        return SamPreprocessor(
            image_size=self.settings.size, mean=tuple(self.settings.mean), std=tuple(self.settings.std),
            prompt=c.prompt, box_jitter=c.box_jitter, box_jitter_max=c.box_jitter_max, num_points=c.num_points,
            num_negative_points=c.num_negative_points, max_instances=c.max_instances, seed=c.seed,
            cache_keys=self.uses_cache, held=self.held_keys(),
        )

    def make_loss(self) -> SamLoss:
        """Focal + dice on the masks and MSE on the predicted IoU, weighted by the
        teacher's config (see ``loss.py``)."""
        return SamLoss.from_config(self.config)

    # -- training / inference -----------------------------------------------------------------
    def forward(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Run ``model`` (this teacher's module or its DDP wrapper) on a batch.

        The batch's uint8 pixels are normalised here, on their device (:meth:`encoder_input`);
        training, validation, evaluation and prediction all pass through this method.
        With a cached encoder the wrapper is still called, with ``image_embeddings``
        instead of pixels, so DDP sees every forward it must synchronise; only the images
        the cache lacks are normalised, and the cache keys (the workers' hashes of the
        original images) are unchanged."""
        kwargs: dict[str, Any] = {"multimask_output": bool(batch.get("multimask", False))}
        if batch.get("prompt_kind", "box") == "box":
            kwargs["input_boxes"] = batch["input_boxes"]
        else:
            kwargs["input_points"] = batch["input_points"]
            kwargs["input_labels"] = batch["input_labels"]
        if self.encoder_frozen:
            import torch

            pixels = batch["pixel_values"]
            # the cache hands its encode function the rows it lacks: give it row numbers,
            # so only those images are normalised and encoded
            rows = torch.arange(pixels.shape[0], device=pixels.device)
            if batch.get("pixel_rows") is not None:
                kwargs["image_embeddings"] = self._recorded_embeddings(batch)
            elif self._keyed(batch):
                kwargs["image_embeddings"] = self.cache.embeddings(
                    batch["cache_keys"], rows, lambda missing: self.frozen_embeddings(batch, missing))
            else:
                kwargs["image_embeddings"] = self.frozen_embeddings(batch, rows)
        else:
            kwargs["pixel_values"] = self.encoder_input(batch)
        out = model(**kwargs)
        return {"pred_masks": out.pred_masks, "iou_scores": out.iou_scores}

    def encoder_input(self, batch: dict[str, Any], rows: Any = None) -> Any:
        """The image encoder's input for the batch (or its ``rows``): normalised on the
        batch's device in the encoder's dtype (:func:`teacherkit_sam.preprocess.finish_pixels`)."""
        pixels = batch["pixel_values"]
        if pixels.is_floating_point():  # already normalised (a batch built by hand)
            return pixels if rows is None else pixels[rows]
        sizes = batch.get("image_sizes")
        if sizes is None:  # a batch from before image_sizes: the host list has the same numbers
            sizes = batch["resized_sizes"]
        import torch

        sizes = torch.as_tensor(sizes, device=pixels.device)
        if rows is not None:
            pixels, sizes = pixels[rows], sizes[rows]
        dtype = next(self.sam.vision_encoder.parameters()).dtype
        return finish_pixels(pixels, sizes, self.settings.mean, self.settings.std, dtype)

    def frozen_embeddings(self, batch: dict[str, Any], rows: Any) -> Any:
        """Image embeddings of the batch's ``rows`` from the frozen encoder, without
        autograd, ``encoder_batch_size`` images per encoder call: the encoder's memory is
        that of one such call whatever the batch, so the mask decoder can train on
        larger batches than one encoder pass would hold."""
        import torch

        step = self.config.encoder_batch_size
        with torch.no_grad():
            parts = [self._encode(self.encoder_input(batch, rows[i : i + step])) for i in range(0, len(rows), step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _encode(self, pixel_values: Any) -> Any:
        """Image embeddings of normalised pixels (:meth:`encoder_input` of a batch)."""
        if not pixel_values.is_floating_point():
            raise TypeError("SamTeacher._encode takes normalised pixels; pass teacher.encoder_input(batch), "
                            "not the collated uint8 pixel_values")
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
            log.info("sam embedding cache before epoch %d: %d hits, %d misses, %d entries, %d views without pixels",
                     epoch, stats["hits"], stats["misses"], stats["entries"], self._without_pixels)
            self._cache.reset_stats()
            self._without_pixels = 0

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
    def _meta(self) -> AdapterMeta:
        lora = self.config.lora.model_dump(mode="json") if self.config.finetune == "lora" else None
        return AdapterMeta(teacher=self.spec.name, tuning=self.mode, base=self.config.base, lora=lora,
                           extra={"image_size": self.settings.size})

    def save_adapter(self, directory: Path) -> None:
        """LoRA: the peft adapter (``adapter_config.json`` + safetensors, a fully trained
        decoder inside it as ``modules_to_save``). Full: ``save_pretrained`` of the whole
        model. Decoder-only: the decoder's weights. With ``teacherkit_adapter.json`` and a
        model card; the folder appears complete or not at all."""
        from safetensors.torch import save_file

        self.set_adapter_scale(1.0)
        meta = self._meta()
        with atomic_dir(Path(directory)) as tmp:
            if self.mode == "decoder-only":
                state = {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state_dict().items()}
                save_file(state, str(tmp / DECODER_ONLY_FILE))
            else:
                self.model.save_pretrained(str(tmp))
            meta.write(tmp)
            write_model_card(tmp, meta, usage=card_usage(self.mode, self.config.base), title="SAM teacher")

    def load_adapter(self, directory: Path) -> None:
        """Restore what :meth:`save_adapter` wrote into this teacher (same tuning set-up)."""
        directory = Path(directory)
        meta = AdapterMeta.read(directory, what="SAM adapter")
        hint = "set teachers.sam.mode/finetune/train_decoder/image_size as at training"
        meta.require(directory, "tuning", meta.tuning, self.mode, hint)
        meta.require(directory, "image_size", meta.extra.get("image_size"), self.settings.size, hint)
        self.set_adapter_scale(1.0)
        if self.mode == "decoder-only":
            from safetensors.torch import load_file

            self.load_trainable_state_dict(load_file(str(directory / DECODER_ONLY_FILE)))
        elif self.mode in ("full", "frozen-encoder-full"):
            from transformers import SamModel

            loaded = SamModel.from_pretrained(str(directory), local_files_only=True)
            self.model.load_state_dict(loaded.state_dict())
        else:
            load_lora_weights(self.model, directory)

    def save_base(self, directory: Path) -> None:
        """For the tiny preset: the random base (as at load time) plus a ``SamProcessor``,
        so ``teachers.sam.base=<directory>`` rebuilds the identical model."""
        if self._base_state is None:
            return
        from transformers import SamModel

        with atomic_dir(Path(directory)) as tmp:
            base = SamModel(self.sam.config)
            base.load_state_dict(self._base_state)
            base.save_pretrained(str(tmp))
            self.save_processor(tmp)

    def save_processor(self, directory: Path) -> None:
        """A ``SamProcessor`` at the input size this teacher trains and predicts at."""
        make_processor(self.settings).save_pretrained(str(directory))

    # -- base <-> tuned ---------------------------------------------------------------------
    def set_adapter_scale(self, scale: float) -> None:
        """0 = base, 1 = fine-tuned, in between interpolates: LoRA updates are scaled
        and fully trained weights move linearly between their base and tuned values
        (:class:`teacherkit.adapters.AdapterScale`). For evaluation only; set 1 again
        before training."""
        self._scale.set(scale)


def card_usage(mode: str, base: str) -> str:
    """The model card's loading code for an adapter of tuning ``mode``."""
    base = "path/to/experiment/teachers/sam/base" if base == "tiny" else base
    if mode in ("full", "frozen-encoder-full"):
        return ("```python\nfrom transformers import SamModel\n\n"
                "model = SamModel.from_pretrained(\"path/to/this/folder\")\n```")
    if mode == "decoder-only":
        return ("The mask decoder's weights (`decoder_only.safetensors`); load with teacherkit: "
                "`teacherkit.inference.load_experiment(experiment).teacher(\"sam\")`.")
    return ("```python\nfrom peft import PeftModel\nfrom transformers import SamModel\n\n"
            f"base = SamModel.from_pretrained(\"{base}\")\n"
            "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n```")


def build_teacher(spec: TeacherSpec, config: Any, workdir: Path | None = None) -> SamTeacher:
    """Load the base named by ``config.base`` and set it up for ``config``."""
    base, settings = load_base(config)
    return SamTeacher(spec, config, base, settings, workdir=workdir)
