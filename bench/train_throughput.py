"""Training-step throughput and peak memory: a plain transformers + peft loop next to
teacherkit's own step, same model config, batch, image size and device.

Workloads (random weights: speed and memory do not depend on the values):

``gdino_lora``   Grounding DINO, LoRA on the decoder + trained box head. Plain: HF
                 ``GroundingDinoForObjectDetection`` + peft, the loss through ``labels=``,
                 ``torch.optim.AdamW``. teacherkit: the plugin's teacher, preprocessor and
                 loss (hooks), the optimizer and step of ``teacherkit/training/loop.py``.
``sam_lora``     SAM, LoRA on the image encoder's qkv + a fully trained mask decoder.
``sam_frozen``   SAM with a frozen image encoder, 3 epochs over the same images: the
                 plain loop runs the encoder every step, teacherkit reads the embedding
                 cache from the second epoch on. Variant ``decoder_batch``: the cache
                 warm and ``--decoder-batch`` images per step (default 8x the batch;
                 the encoder would run ``encoder_batch_size`` images per call), the
                 batch a frozen encoder lets the mask decoder train on when it fits.
                 ``device_cache`` / ``decoder_batch_device``: the same with
                 ``cache_embeddings: device`` (the embeddings kept in the accelerator's memory).

Each lever (frozen weights in bf16, channels-last, gradient checkpointing, the loss with
transformers' host syncs, foreach instead of fused AdamW, reading the losses on the host
every step, torch.compile) runs as its own teacherkit variant, so its effect is measured
against the same plain baseline in the same process.

    python bench/train_throughput.py --size tiny              # CPU, seconds (CI smoke)
    python bench/train_throughput.py --size full --json out.json   # one GPU, minutes

``--size full``: Grounding DINO with transformers' default config (the grounding-dino-tiny
architecture: Swin-T, BERT-base text encoder, 900 queries, 6+6 layers) at 800x1333, SAM
ViT-B at 1024², batch 8, bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["red square", "blue circle", "green triangle", "yellow star", "black cross", "white ring",
               "orange hexagon", "purple arrow"]


@dataclass(frozen=True)
class Size:
    batch: int
    warmup: int
    steps: int
    gdino_edges: tuple[int, int]  # shortest, longest
    sam_image: int
    sam_images: int  # images per epoch of the frozen-encoder workload
    objects: int  # objects per synthetic image


SIZES = {
    "tiny": Size(batch=2, warmup=1, steps=3, gdino_edges=(96, 128), sam_image=64, sam_images=6, objects=3),
    "full": Size(batch=8, warmup=3, steps=10, gdino_edges=(800, 1333), sam_image=1024, sam_images=48, objects=6),
}


@dataclass
class Result:
    workload: str
    variant: str
    images_per_second: float | None = None
    peak_gib: float | None = None
    seconds: float | None = None
    #: this process's CPU seconds over the timed steps (on a CPU device the fairer figure on a busy machine)
    cpu_seconds: float | None = None
    #: images over the timed steps (steps x batch); CPU-second ratios are per image
    images: int | None = None
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# -- environment -------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def run_record(script: str, argv: list[str] | None) -> dict[str, Any]:
    """What every results file carries besides its figures: the machine, the date, the
    versions and the exact command (``script`` is the bench's path from the repository root)."""
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", script, *args]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "gpu": gpu},
        "versions": {"python": platform.python_version(),
                     **{name: _version(name) for name in ("torch", "transformers", "peft", "teacherkit")}},
    }



def ensure_plugins(host: Any) -> Any:
    """Register the teacher plugins and the augmentation plugin from the source tree when
    they are not installed (a bare GPU machine with only a copy of the repository)."""
    import importlib

    have = set(host.teachers())
    for name, module in (("grounding_dino", "teacherkit_dino.plugin"), ("sam", "teacherkit_sam.plugin")):
        if name not in have:
            host.register(importlib.import_module(module), name=module)
    if not host.characteristics():  # the augmentation plugin is the one that declares them
        host.register(importlib.import_module("teacherkit_augment.plugin"), name="teacherkit_augment.plugin")
    return host


class Device:
    """Device, autocast and memory accounting shared by both loops."""

    def __init__(self, name: str, amp: bool) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self.amp = amp

    def autocast(self) -> Any:
        import contextlib

        if not self.amp:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def release(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


# -- synthetic data ------------------------------------------------------------------------------


def synthetic_samples(count: int, height: int, width: int, objects: int, seed: int) -> list[dict[str, Any]]:
    """Noise images with rectangular objects (boxes and masks), as ``teacherkit.types.Sample``."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        boxes, masks = [], np.zeros((objects, height, width), np.uint8)
        for k in range(objects):
            w, h = rng.uniform(0.1, 0.4) * width, rng.uniform(0.1, 0.4) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes.append([x, y, w, h])
            masks[k, int(y) : int(y + h), int(x) : int(x + w)] = 1
        labels = rng.integers(0, len(CLASS_NAMES), objects)
        samples.append({
            "image": image, "image_id": index, "file_name": f"synthetic_{index}.png", "orig_size": (height, width),
            "boxes": np.asarray(boxes, np.float32), "labels": labels.astype(np.int64),
            "category_ids": labels.astype(np.int64) + 1, "annotation_ids": np.arange(objects) + 1000 * index,
            "iscrowd": np.zeros(objects, np.int64), "masks": masks, "extra": {"seed": index},
        })
    return samples


def dataset_info() -> Any:
    from teacherkit.data.info import DatasetInfo

    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]
    return DatasetInfo(annotation_kinds=["boxes", "masks"], categories=cats, class_names=list(CLASS_NAMES),
                       class_mapping={c["id"]: i for i, c in enumerate(cats)}, source="synthetic")


def batches(preprocessor: Any, samples: list[dict[str, Any]], batch: int, dev: Device) -> list[dict[str, Any]]:
    """Collated batches already on the device: the step is timed, not the loader
    (``bench/data_pipeline.py`` measures that)."""
    from teacherkit.training.dataset import move_to_device

    items = [preprocessor(s, train=True) for s in samples]
    return [move_to_device(preprocessor.collate(items[i : i + batch]), dev.device)
            for i in range(0, len(items) - batch + 1, batch)]


def finished(data: list[dict[str, Any]], finish: Any) -> list[dict[str, Any]]:
    """The plain loop's copies of the batches: ``finish`` is the teacher's public step from the
    collated batch to the model's inputs (normalised float pixels, padding mask), done once here
    as a plain pipeline's loader would hand them over; teacherkit's step gets the collated
    batches as they are and does it inside the step. Without such a step, the batches as they are."""
    return data if finish is None else [finish(b) for b in data]


# -- levers (functions the trainer could adopt; see bench/README.md) --------------------------------


def cast_frozen_to_bf16(model: Any) -> int:
    """Store every weight that does not train in bf16 (autocast computes in bf16 anyway).
    Returns the number of parameters cast."""
    import torch

    count = 0
    for param in model.parameters():
        if not param.requires_grad and param.dtype == torch.float32:
            param.data = param.data.to(torch.bfloat16)
            count += param.numel()
    return count


def to_channels_last(model: Any) -> None:
    import torch

    model.to(memory_format=torch.channels_last)


def frozen_to_eval(model: Any) -> int:
    """Grounding DINO: put the parts a decoder-only LoRA leaves frozen (image backbone, text
    encoder, encoder) in evaluation mode, so their dropout and stochastic depth do not run
    (nor the encoder's training-mode overflow guard). Not teacherkit's default: it changes
    what the decoder trains on. Returns the number of modules switched."""
    parts = [model.model.backbone, model.model.text_backbone, model.model.encoder]
    for part in parts:
        part.eval()
    return sum(1 for part in parts for _ in part.modules())


def apply_levers(model: Any, *, bf16: bool, channels_last: bool, checkpointing: bool) -> dict[str, Any]:
    """Apply the memory/layout levers a variant asks for; returns notes for the report."""
    from teacherkit_sam.loading import enable_gradient_checkpointing  # the plugin's own switch

    notes: dict[str, Any] = {}
    if bf16:
        notes["bf16_params"] = cast_frozen_to_bf16(model)
    if channels_last:
        to_channels_last(model)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return notes


# -- the two steps --------------------------------------------------------------------------------


def plain_step(model: Any, optimizer: Any, dev: Device, run: Any) -> Any:
    """One step of the plain loop: forward (+ loss), backward, AdamW."""

    def step(batch: dict[str, Any]) -> None:
        with dev.autocast():
            loss = run(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def teacherkit_step(teacher: Any, model: Any, loss_fn: Any, dev: Device, *, lr: float = 1e-4,
                    weight_decay: float = 1e-4, grad_clip: float | None = 1.0, fused: bool | None = None,
                    read_losses: bool = True) -> Any:
    """The step of ``teacherkit.training.loop.TeacherLoop.run``: teacher.forward, the
    plugin's loss, the finite-loss check, backward, clipping, AdamW with its parameter
    groups, the LR schedule, and (``read_losses``) the per-step host read of the losses."""
    import torch

    from teacherkit.training.loop import _param_groups, warmup_cosine

    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr,
                                  fused=dev.cuda if fused is None else fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1000, 0.05))
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, Any] = {}

    def step(batch: dict[str, Any]) -> None:
        with dev.autocast():
            losses = loss_fn(teacher.forward(model, batch), batch)
        loss = losses["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if read_losses:  # as the loop: the finite check and the loss values in one host read
            read = torch.stack([finite, *(v.detach().float() for v in losses.values())]).tolist()
            for key, value in zip(losses, read[1:]):
                sums[key] = sums.get(key, 0.0) + value
            ok = read[0] >= 1.0
        else:
            ok = finite.item() >= 1.0
        if not ok:
            optimizer.zero_grad(set_to_none=True)
            return
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not read_losses:  # the lever: sums stay on the device
            for key, value in losses.items():
                sums[key] = sums.get(key, 0) + value.detach()

    return step


def timed(step: Any, warm: list[dict[str, Any]], work: list[dict[str, Any]], steps: int, dev: Device,
          batch: int, laps: list[float] | None = None) -> tuple[float, float, float | None, float]:
    """Warm up, then time ``steps`` steps cycling through ``work``: (img/s, seconds, peak GiB,
    CPU seconds). ``laps`` receives the seconds of each pass over ``work`` (an epoch)."""
    for b in warm:
        step(b)
    dev.sync()
    cpu = time.process_time()
    start = lap = time.perf_counter()
    for i in range(steps):
        step(work[i % len(work)])
        if laps is not None and (i + 1) % len(work) == 0:
            dev.sync()
            now = time.perf_counter()
            laps.append(round(now - lap, 4))
            lap = now
    dev.sync()
    seconds = time.perf_counter() - start
    return steps * batch / seconds, seconds, dev.peak_gib(), time.process_time() - cpu


def profile(step: Any, batch: dict[str, Any], dev: Device, label: str) -> None:
    """torch.profiler over two steps: the ops that take the most device (or CPU) time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            step(batch)
        dev.sync()
    key = "cuda_time_total" if dev.cuda else "cpu_time_total"
    print(f"# profile {label} (2 steps)\n" + prof.key_averages().table(sort_by=key, row_limit=14), flush=True)


def count_syncs(step: Any, batch: dict[str, Any], dev: Device) -> int | None:
    """Host waits for the GPU in one step, as torch's sync debug mode reports them."""
    if not dev.cuda:
        return None
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def measure(workload: str, variant: str, build: Any, warm: list, work: list, size: Size, dev: Device,
            syncs: bool = False, epochs: bool = False, profiled: bool = False, batch: int | None = None) -> Result:
    """Build (model + step), time it, free it; a failing variant is reported, not fatal.
    ``batch``: images per step when not ``size.batch``."""
    result = Result(workload, variant)
    batch = batch or size.batch
    try:
        dev.reset_peak()
        step, notes = build()
        result.notes.update(notes)
        laps: list[float] | None = [] if epochs else None
        ips, seconds, peak, cpu = timed(step, warm, work, size.steps, dev, batch, laps)
        result.images_per_second, result.seconds, result.peak_gib, result.cpu_seconds = ips, seconds, peak, cpu
        result.images = size.steps * batch
        if batch != size.batch:
            result.notes["batch"] = batch
        if laps:
            result.notes["epoch_seconds"] = laps
        if syncs:
            result.notes["host_syncs_per_step"] = count_syncs(step, work[0], dev)
        if profiled:
            profile(step, work[0], dev, f"{workload}/{variant}")
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc(limit=3, file=sys.stderr)
    finally:
        step = None
        dev.release()
    report(result)
    return result


# -- workloads ------------------------------------------------------------------------------------


def gdino_base(size_name: str, size: Size) -> tuple[Any, Any]:
    """The LoRA config of the ``gdino_lora`` workload at ``size`` and its random base (the
    tiny preset, or transformers' default config, the grounding-dino-tiny architecture),
    from seed 0."""
    import torch

    from teacherkit_dino.config import GroundingDinoConfig, TinyArchitecture
    from teacherkit_dino.modeling import LoadedBase, TeacherGroundingDino, build_tiny_base
    from teacherkit_dino.tokenizer import build_tiny_tokenizer

    shortest, longest = size.gdino_edges
    cfg = GroundingDinoConfig(base="tiny" if size_name == "tiny" else "bench-random", finetune="lora",
                              shortest_edge=shortest, longest_edge=longest)
    torch.manual_seed(0)
    if size_name == "tiny":
        return cfg, build_tiny_base(CLASS_NAMES, TinyArchitecture(), cfg.max_text_len)
    from transformers import GroundingDinoConfig as HFConfig

    return cfg, LoadedBase(model=TeacherGroundingDino(HFConfig(max_text_len=cfg.max_text_len)),
                           tokenizer=build_tiny_tokenizer(CLASS_NAMES), source="bench-random")


def gdino_workload(host: Any, size_name: str, size: Size, dev: Device, levers: list[str],
                   profiled: bool = False) -> list[Result]:
    import torch
    from peft import LoraConfig, get_peft_model

    from teacherkit.adapters import point_input_embeddings
    from teacherkit_dino.config import DEFAULT_LORA_TARGETS
    from teacherkit_dino.modeling import TEXT_EMBEDDINGS, LoadedBase, box_head_parameters
    from teacherkit_dino.teacher import GroundingDinoTeacher

    spec = host.teacher("grounding_dino")
    started = time.perf_counter()
    cfg, base = gdino_base(size_name, size)
    pristine = base.model
    print(f"# gdino base built in {time.perf_counter() - started:.1f}s "
          f"({sum(p.numel() for p in pristine.parameters()) / 1e6:.1f}M parameters)", flush=True)
    info = dataset_info()

    def teacher_parts(msda: str = "auto", attention: str = "sdpa", frozen_precision: str = "autocast",
                      **loss_kwargs: Any) -> tuple[Any, Any, Any]:
        fresh = LoadedBase(model=copy.deepcopy(pristine), tokenizer=base.tokenizer, source=base.source)
        variant = cfg.model_copy(update={"deformable_attention": msda, "attention": attention,
                                         "frozen_precision": frozen_precision})
        teacher = GroundingDinoTeacher(spec, variant, info, fresh)
        teacher.model.to(dev.device)
        loss_fn = host.make_loss(spec, cfg, teacher)
        if loss_kwargs:
            from teacherkit_dino.loss import GroundingDinoLoss

            loss_fn = GroundingDinoLoss.from_model_config(teacher.hf_model.config, **loss_kwargs)
        return teacher, teacher.model, loss_fn

    # batches through the plugin's own preprocessor (hook); both loops get the same tensors
    probe, _, _ = teacher_parts()
    pre = host.make_preprocessor(spec, cfg, probe)
    height, width = (600, 1000) if size_name == "full" else (72, 96)  # full: resized to 800x1333
    samples = synthetic_samples(size.batch * 3, height, width, size.objects, seed=1)
    data = batches(pre, samples, size.batch, dev)
    warm, work = data[:1] * size.warmup, data[1:]
    plain_data = finished(data, getattr(probe, "finish_batch", None))
    plain_warm, plain_work = plain_data[:1] * size.warmup, plain_data[1:]
    del probe

    def plain() -> tuple[Any, dict[str, Any]]:
        model = copy.deepcopy(pristine)
        # keep transformers' own loss choice; peft needs the embeddings transformers 5 cannot
        # name for this model (the same one-line answer any plain transformers+peft user gives)
        model.loss_type = "GroundingDinoForObjectDetection"
        point_input_embeddings(model, TEXT_EMBEDDINGS)
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=DEFAULT_LORA_TARGETS, bias="none")
        model = get_peft_model(model, lora)
        for param in box_head_parameters(model.get_base_model()).values():
            param.requires_grad_(True)
        model.to(dev.device).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                      weight_decay=1e-4)

        def run(m: Any, b: dict[str, Any]) -> Any:
            return m(pixel_values=b["pixel_values"], pixel_mask=b["pixel_mask"], input_ids=b["input_ids"],
                     attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"], labels=b["labels"]).loss

        return plain_step(model, optimizer, dev, run), {}

    def teacherkit(*, loss: dict[str, Any] | None = None, bf16: bool = False, channels_last: bool = False,
                   compile_: bool = False, msda: str = "auto", attention: str = "sdpa", guard: bool = True,
                   eval_frozen: bool = False, pure_bf16: bool = False, **step_kwargs: Any) -> Any:
        def build() -> tuple[Any, dict[str, Any]]:
            from teacherkit_dino import encoder_guard
            from teacherkit_dino.msda import triton_available

            teacher, model, loss_fn = teacher_parts(msda, attention, "bf16" if pure_bf16 else "autocast",
                                                    **(loss or {}))
            notes = apply_levers(model, bf16=bf16, channels_last=channels_last, checkpointing=False)
            notes["msda"] = "triton" if msda == "auto" and triton_available() and dev.cuda else "torch"
            if not guard:  # transformers' encoder layers: a host read of their overflow test each
                encoder_guard.install(teacher.hf_model, enabled=False)
            model.train()
            if eval_frozen:  # the frozen parts without dropout or stochastic depth
                notes["eval_modules"] = frozen_to_eval(teacher.hf_model)
            if pure_bf16:  # teachers.grounding_dino.frozen_precision: bf16
                from teacherkit_dino.frozen_bf16 import installed

                notes["bf16_parts"] = installed(teacher.hf_model)
            runner = torch.compile(model) if compile_ else model
            return teacherkit_step(teacher, runner, loss_fn, dev, **step_kwargs), notes

        return build

    variants: dict[str, Any] = {"teacherkit": teacherkit()}
    lever_builds = {
        "torch_msda": teacherkit(msda="torch"),
        "eager_attention": teacherkit(attention="eager"),
        "transformers_loss": teacherkit(loss={"sync_free": False}),
        "foreach_adamw": teacherkit(fused=False),
        "no_step_loss_reads": teacherkit(read_losses=False),
        "bf16_frozen": teacherkit(bf16=True),
        "channels_last": teacherkit(channels_last=True),
        "transformers_guard": teacherkit(guard=False),
        "eval_frozen": teacherkit(eval_frozen=True),
        "pure_bf16_frozen": teacherkit(pure_bf16=True),
        "pure_bf16_eval": teacherkit(pure_bf16=True, eval_frozen=True),
        "compile": teacherkit(compile_=True),
        "proposed": teacherkit(bf16=True, read_losses=False),
    }
    variants.update({k: v for k, v in lever_builds.items() if k in levers and (dev.amp or "bf16" not in k
                                                                               and k != "proposed")})
    results = [measure("gdino_lora", "plain", plain, plain_warm, plain_work, size, dev, syncs=True)]
    for name, build in variants.items():
        syncs = name in ("teacherkit", "proposed", "transformers_guard", "eval_frozen")
        results.append(measure("gdino_lora", name, build, warm, work, size, dev, syncs=syncs,
                               profiled=profiled and name == "teacherkit"))
    return results


def sam_workloads(host: Any, size_name: str, size: Size, dev: Device, levers: list[str],
                  wanted: set[str], profiled: bool = False, decoder_batch: int | None = None) -> list[Result]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import SamConfig as HFSamConfig
    from transformers import SamModel

    from teacherkit_sam.attention import count_folded_attention
    from teacherkit_sam.config import SamConfig
    from teacherkit_sam.loading import ImageSettings, tiny_sam_config
    from teacherkit_sam.teacher import SamTeacher

    spec = host.teacher("sam")
    torch.manual_seed(0)
    started = time.perf_counter()
    pristine = SamModel(tiny_sam_config(size.sam_image) if size_name == "tiny" else HFSamConfig())
    print(f"# sam base built in {time.perf_counter() - started:.1f}s "
          f"({sum(p.numel() for p in pristine.parameters()) / 1e6:.1f}M parameters)", flush=True)
    settings = ImageSettings(size=size.sam_image)
    lora_cfg = SamConfig(base="bench-random", mode="lora", finetune="lora", image_size=size.sam_image)
    frozen_cfg = SamConfig(base="bench-random", mode="frozen_encoder", finetune="lora", image_size=size.sam_image)

    def teacher_parts(cfg: Any) -> tuple[Any, Any, Any]:
        teacher = SamTeacher(spec, cfg, copy.deepcopy(pristine), settings)
        teacher.model.to(dev.device)
        return teacher, teacher.model, host.make_loss(spec, cfg, teacher)

    probe, _, _ = teacher_parts(lora_cfg)
    # every variant trains on these batches: keyed, so the frozen-encoder ones can use their cache
    pre = dataclasses.replace(host.make_preprocessor(spec, lora_cfg, probe), cache_keys=True)
    loss_fn = host.make_loss(spec, lora_cfg, probe)
    side = max(size.sam_image * 3 // 4, 32)
    samples = synthetic_samples(size.sam_images + size.batch, side, size.sam_image, size.objects, seed=2)
    data = batches(pre, samples, size.batch, dev)
    warm, epoch = data[:1] * size.warmup, data[1:]  # warm-up images never enter the cache
    encoder_input = getattr(probe, "encoder_input", None)
    plain_data = finished(data, encoder_input and (lambda b: {**b, "pixel_values": encoder_input(b)}))
    plain_parts = (plain_data[:1] * size.warmup, plain_data[1:])
    del probe

    def sam_run(m: Any, b: dict[str, Any]) -> Any:
        out = m(pixel_values=b["pixel_values"], input_boxes=b["input_boxes"], multimask_output=False)
        return loss_fn({"pred_masks": out.pred_masks, "iou_scores": out.iou_scores}, b)["loss"]

    def plain(frozen: bool) -> Any:
        def build() -> tuple[Any, dict[str, Any]]:
            model = copy.deepcopy(pristine)
            if frozen:
                model.requires_grad_(False)
                model.mask_decoder.requires_grad_(True)
            else:
                lora = LoraConfig(r=lora_cfg.lora.r, lora_alpha=lora_cfg.lora.alpha,
                                  lora_dropout=lora_cfg.lora.dropout, target_modules=["qkv"],
                                  modules_to_save=["mask_decoder"])
                model = get_peft_model(model, lora)
            model.to(dev.device).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                          weight_decay=1e-4)
            return plain_step(model, optimizer, dev, sam_run), {}

        return build

    def teacherkit(cfg: Any, *, bf16: bool = False, channels_last: bool = False, checkpointing: bool = False,
                   attention: str | None = None, warm_cache: bool = False, fill: list | None = None,
                   **step_kwargs: Any) -> Any:
        """``warm_cache``: the cache filled untimed first, from ``fill`` (default: the
        warm-up and epoch batches)."""

        def build() -> tuple[Any, dict[str, Any]]:
            teacher, model, fn = teacher_parts(cfg)
            notes = {"tuning": teacher.mode,
                     **apply_levers(model, bf16=bf16, channels_last=channels_last, checkpointing=checkpointing)}
            # the teacher applies teachers.sam.attention; a variant may switch it
            notes["attention"] = set_sam_attention(teacher.sam, attention) if attention else \
                f"{cfg.attention} ({count_folded_attention(teacher.sam)} folded modules)"
            model.train()
            step = teacherkit_step(teacher, model, fn, dev, **step_kwargs)
            if teacher.uses_cache:
                notes["cache"] = teacher.cache
                if warm_cache:  # a later run on the same images (a sweep, a resumed run): untimed fill
                    with torch.no_grad(), dev.autocast():
                        for b in fill if fill is not None else warm[:1] + epoch:
                            teacher.forward(model, b)  # the teacher's own path fills its cache
                    teacher.cache.reset_stats()
            return step, notes

        return build

    results: list[Result] = []
    if "sam_lora" in wanted:
        results += sam_lora(plain, teacherkit, lora_cfg, (warm, epoch), plain_parts, size, dev, levers, profiled)
    if "sam_frozen" not in wanted:
        return results
    # frozen encoder: 3 epochs over the same images; the cache fills in epoch 1
    three_epochs = replace_steps(size, 3 * len(epoch))
    # cache_embeddings: device keeps the embeddings in the accelerator's memory (no copy per hit)
    device_cfg = frozen_cfg.model_copy(update={"cache_embeddings": "device", "cache_memory_mb": 1 << 16})
    frozen_variants = {"plain": plain(True), "teacherkit": teacherkit(frozen_cfg),
                       "warm_cache": teacherkit(frozen_cfg, warm_cache=True), "device_cache": teacherkit(device_cfg)}
    if "sdpa_attention" in levers:
        frozen_variants["sdpa_attention"] = teacherkit(frozen_cfg, attention="sdpa")
    if "bf16_frozen" in levers and dev.amp:
        frozen_variants["bf16_frozen"] = teacherkit(frozen_cfg, bf16=True)
    for name, build in frozen_variants.items():
        this_warm, this_epoch = plain_parts if name == "plain" else (warm, epoch)
        result = measure("sam_frozen_3ep", name, build, this_warm, this_epoch, three_epochs, dev, epochs=True,
                         profiled=profiled and name in ("plain", "teacherkit"))
        _cache_stats(result)
        results.append(result)
    # the cached phase at a larger batch: as many images as the 3 epochs above (rounded up to
    # whole steps), the same images cycled; the cache is filled untimed, as warm_cache's
    big = decoder_batch or 8 * size.batch
    items = [samples[size.batch + i % size.sam_images] for i in range(big * -(-3 * size.sam_images // big))]
    big_epoch = batches(pre, items, big, dev)
    big_variants = [("decoder_batch", frozen_cfg), ("decoder_batch_device", device_cfg)]
    if "torch_loss_kernel" in levers:  # the loss's sums by PyTorch operations instead of the fused kernels
        big_variants.append(("decoder_batch_device_torch_loss",
                             device_cfg.model_copy(update={"loss_kernel": "torch"})))
    for name, cfg in big_variants:
        result = measure("sam_frozen_3ep", name, teacherkit(cfg, warm_cache=True, fill=big_epoch), big_epoch[:1],
                         big_epoch, replace_steps(size, len(big_epoch)), dev, batch=big, profiled=profiled)
        _cache_stats(result)
        results.append(result)
    return results


def _cache_stats(result: Result) -> None:
    """The embedding cache a variant's notes hold, as its hit/miss counts."""
    cache = result.notes.pop("cache", None)
    if cache is not None:
        result.notes["cache"] = cache.stats()
        if not result.notes["cache"]["hits"]:  # a cached variant that never hit measured the encoder
            print(f"# warning: {result.variant}: the embedding cache never hit", file=sys.stderr, flush=True)


def sam_lora(plain: Any, teacherkit: Any, lora_cfg: Any, parts: tuple[list, list], plain_parts: tuple[list, list],
             size: Size, dev: Device, levers: list[str], profiled: bool = False) -> list[Result]:
    """``parts``: (warm-up, timed) batches as collated; ``plain_parts``: the plain loop's copies."""
    warm, epoch = parts
    results = [measure("sam_lora", "plain", plain(False), *plain_parts, size, dev)]
    lora_variants: dict[str, Any] = {"teacherkit": teacherkit(lora_cfg)}
    lever_builds = {
        "sdpa_attention": teacherkit(lora_cfg, attention="sdpa"),
        "folded_padded": teacherkit(lora_cfg, attention="folded_pad"),
        "bf16_frozen": teacherkit(lora_cfg, bf16=True),
        "channels_last": teacherkit(lora_cfg, channels_last=True),
        "grad_checkpointing": teacherkit(lora_cfg, checkpointing=True),
        "no_step_loss_reads": teacherkit(lora_cfg, read_losses=False),
        "foreach_adamw": teacherkit(lora_cfg, fused=False),
        "torch_loss_kernel": teacherkit(lora_cfg.model_copy(update={"loss_kernel": "torch"})),
    }
    lora_variants.update({k: v for k, v in lever_builds.items() if k in levers and (dev.amp or "bf16" not in k)})
    for name, build in lora_variants.items():
        results.append(measure("sam_lora", name, build, warm, epoch, size, dev,
                               profiled=profiled and name == "teacherkit"))
    return results


def set_sam_attention(sam: Any, attention: str) -> str:
    """Switch a built SAM's vision attention: "sdpa" puts transformers' own SDPA attention
    (a dense relative-position bias) back in place of the plugin's folded one."""
    from teacherkit_sam import attention as folded

    if attention == "sdpa":
        return f"sdpa ({folded.use_transformers_attention(sam)} modules)"
    if attention == "folded_pad":  # values padded to the query/key width (flash-eligible)
        return f"folded, padded values ({folded.use_folded_attention(sam, pad_value=True)} modules)"
    return f"folded ({folded.use_folded_attention(sam)} modules)"


def replace_steps(size: Size, steps: int) -> Size:
    from dataclasses import replace

    return replace(size, steps=steps)


# -- report -------------------------------------------------------------------------------------


def report(r: Result) -> None:
    if r.error:
        print(f"{r.workload:16s} {r.variant:20s} FAILED {r.error}", flush=True)
        return
    peak = f"{r.peak_gib:7.2f} GiB" if r.peak_gib is not None else "   n/a    "
    notes = {k: v for k, v in r.notes.items() if k != "cache"}
    print(f"{r.workload:16s} {r.variant:20s} {r.images_per_second:9.2f} img/s  {peak}  {notes or ''}", flush=True)


def best_of(runs: list[list[Result]], by_cpu: bool) -> list[Result]:
    """Each (workload, variant)'s fastest of the repeated runs (least CPU seconds on a CPU device,
    most img/s on a GPU): other work on the machine only ever slows a run down."""
    best: dict[tuple[str, str], Result] = {}
    for r in (r for run in runs for r in run):
        key, old = (r.workload, r.variant), best.get((r.workload, r.variant))
        if old is None or (old.error and not r.error):
            best[key] = r
        elif not r.error and (r.cpu_seconds < old.cpu_seconds if by_cpu
                              else r.images_per_second > old.images_per_second):
            best[key] = r
    return list(best.values())


def ratios(results: list[Result], by_cpu: bool = False) -> list[dict[str, Any]]:
    """Each variant against its workload's plain loop: img/s and peak-memory ratios. ``by_cpu``:
    the speed ratio from CPU seconds (a CPU device on a machine other work shares)."""
    rows = []
    plains = {r.workload: r for r in results if r.variant == "plain" and not r.error}
    for r in results:
        base = plains.get(r.workload)
        if r.variant == "plain" or base is None or r.error:
            continue
        if by_cpu and r.cpu_seconds and base.cpu_seconds:
            speed = (base.cpu_seconds / base.images) / (r.cpu_seconds / r.images)  # CPU seconds per image
        else:
            speed = r.images_per_second / base.images_per_second
        memory = (r.peak_gib / base.peak_gib) if r.peak_gib and base.peak_gib else None
        rows.append({"workload": r.workload, "variant": r.variant, "speed_ratio": speed, "memory_ratio": memory})
    return rows


#: the variants ``--levers all`` runs (``compile`` only when named: minutes of compilation)
ALL_LEVERS = ("torch_msda", "eager_attention", "sdpa_attention", "folded_padded", "transformers_loss", "foreach_adamw",
              "no_step_loss_reads", "bf16_frozen", "channels_last", "grad_checkpointing", "transformers_guard",
              "eval_frozen", "proposed", "torch_loss_kernel")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--amp", choices=["auto", "bf16", "no"], default="auto",
                        help="bf16 autocast (auto: on CUDA only, as the trainer's mixed_precision=auto)")
    parser.add_argument("--workloads", default="gdino_lora,sam_lora,sam_frozen",
                        help="comma list: gdino_lora, sam_lora, sam_frozen")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler tables (the teacherkit step of each workload, SAM frozen plain)")
    parser.add_argument("--levers", default="", help="comma list of teacherkit variants to add, or 'all' "
                        f"({', '.join(ALL_LEVERS)}, compile)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default by size)")
    parser.add_argument("--decoder-batch", type=int, default=None,
                        help="images per step of sam_frozen's decoder_batch variant (default 8x the batch)")
    parser.add_argument("--objects", type=int, default=None,
                        help="objects (prompts) per synthetic image (default by size: 3 tiny, 6 full); the "
                        "frozen-encoder gain depends on it, since the mask decoder runs once per prompt")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every workload this many times and keep each variant's best (a busy machine)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    size = SIZES[args.size] if args.steps is None else replace_steps(SIZES[args.size], args.steps)
    if args.objects is not None:
        from dataclasses import replace

        size = replace(size, objects=args.objects)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    amp = args.amp == "bf16" or (args.amp == "auto" and device.startswith("cuda"))
    dev = Device(device, amp)
    levers = [x for x in args.levers.split(",") if x]
    if levers == ["all"]:
        levers = list(ALL_LEVERS)

    from teacherkit.plugins import get_plugin_manager

    host = ensure_plugins(get_plugin_manager())
    card = torch.cuda.get_device_name(dev.device) if dev.cuda else (platform.processor() or platform.machine())
    print(f"# train_throughput size={args.size} device={device} ({card}) amp={'bf16' if amp else 'no'} "
          f"batch={size.batch} steps={size.steps} objects={size.objects} torch={torch.__version__} "
          f"date={time.strftime('%Y-%m-%d')}", flush=True)
    runs: list[list[Result]] = []
    wanted = args.workloads.split(",")
    for _ in range(max(args.repeat, 1)):
        results: list[Result] = []
        if "gdino_lora" in wanted:
            results += gdino_workload(host, args.size, size, dev, levers, profiled=args.profile)
        if {"sam_lora", "sam_frozen"} & set(wanted):
            results += sam_workloads(host, args.size, size, dev, levers, set(wanted), profiled=args.profile,
                                     decoder_batch=args.decoder_batch)
        runs.append(results)
    results = best_of(runs, by_cpu=not dev.cuda)
    rows = ratios(results, by_cpu=not dev.cuda)
    basis = "CPU seconds" if not dev.cuda else "img/s"
    print(f"\nratio vs plain loop ({basis}; peak memory):")
    for row in rows:
        mem = f"{row['memory_ratio']:.2f}x" if row["memory_ratio"] is not None else "n/a"
        print(f"ratio {row['workload']:16s} {row['variant']:20s} speed {row['speed_ratio']:.2f}x  memory {mem}")
    if args.json:
        payload = {"kind": "train_throughput", **run_record("bench/train_throughput.py", argv),
                   "size": args.size, "device": device, "card": card, "amp": amp, "batch": size.batch,
                   "steps": size.steps, "objects": size.objects, "threads": args.threads, "repeat": max(args.repeat, 1),
                   "speed_basis": basis,
                   "results": [asdict(r) for r in results], "ratios": rows}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    failed = [r for r in results if r.error and r.variant in ("plain", "teacherkit")]
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
