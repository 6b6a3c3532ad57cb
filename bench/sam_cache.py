"""SAM frozen-encoder embedding cache under ``teacherkit train``'s default augmentation.

Training images come through the real sample dataset (``teacherkit.data.samples``) with
the augmentation plugin's default pipeline, batches through the SAM plugin's
preprocessor, and each step is the teacher's forward + loss + backward + AdamW step
with the encoder frozen. Compared, on the same images and epochs:

``reference``     the plain frozen-encoder loop: no cache, the encoder runs every step.
``cache, fresh``  the cache with a fresh augmented view every epoch (``cache_views: 0``,
                  the behaviour before views): every encoder input is new.
``cache, K views`` epoch e augments each image as in epoch e mod K (``cache_views: K``):
                  from epoch K on every encoder input repeats.

Printed per epoch: the cache's hit rate and the model steps' seconds, and for each
cached variant the ratio of its epoch time to the reference's on the same epoch. Data
loading (read, augment, preprocess) is timed apart: it is the same for every variant.

The epoch -> view mapping is the core's (``SampleDataset(augment_views=K)``, which the trainer
sets from ``Teacher.augmentation_views()``): the seed of epoch ``e % K`` for the augmentation,
the epoch's own seed for everything else.

    python bench/sam_cache.py --json-out bench/results/sam_cache-DATE.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "domain_a" / "train.json"


def subset(coco: Any, count: int) -> Any:
    from teacherkit.data.coco import CocoDataset

    images = list(coco.images)[:count]
    keep = {img.id for img in images}
    return CocoDataset(images, [a for a in coco.annotations if a.image_id in keep], coco.categories, path=coco.path)


def epoch_batches(dataset: Any, pre: Any, epoch: int, batch: int) -> tuple[list[dict[str, Any]], float]:
    """The epoch's batches (a seeded shuffle) and the seconds spent making them."""
    dataset.set_epoch(epoch)
    order = list(range(len(dataset)))
    random.Random(epoch).shuffle(order)
    started = time.perf_counter()
    items = [dataset[i] for i in order]
    batches = [pre.collate(items[i : i + batch]) for i in range(0, len(items), batch)]
    return batches, time.perf_counter() - started


def teacher_factory(host: Any, size: str, image_size: int) -> Any:
    """``make(**config fields) -> SamTeacher`` with the encoder frozen, the same random
    weights every time. ``tiny``: the tiny preset (a 2-layer, 32-wide encoder: the
    decoder and the loss dominate). ``small``: SAM ViT-B's architecture (transformers'
    defaults, 94 M parameters) at ``image_size`` px, where the encoder dominates as at
    full size."""
    import copy

    import torch

    from teacherkit_sam import load_sam_with_lora

    if size == "tiny":
        def make_tiny(**fields: Any) -> Any:
            torch.manual_seed(0)
            return load_sam_with_lora("tiny", mode="frozen_encoder", image_size=image_size, **fields)

        return make_tiny
    from transformers import SamConfig as HFSamConfig
    from transformers import SamModel, SamPromptEncoderConfig, SamVisionConfig

    from teacherkit_sam.config import SamConfig
    from teacherkit_sam.loading import ImageSettings
    from teacherkit_sam.teacher import SamTeacher

    torch.manual_seed(0)
    pristine = SamModel(HFSamConfig(vision_config=SamVisionConfig(image_size=image_size).to_dict(),
                                    prompt_encoder_config=SamPromptEncoderConfig(image_size=image_size).to_dict()))
    spec = host.teacher("sam")

    def make_small(**fields: Any) -> Any:
        config = SamConfig(base="bench-random", mode="frozen_encoder", image_size=image_size, **fields)
        return SamTeacher(spec, config, copy.deepcopy(pristine), ImageSettings(size=image_size))

    return make_small


class Run:
    """One variant's training: a fresh teacher and optimizer, stepped an epoch at a time
    (the variants' epochs are interleaved so a busy machine slows them alike)."""

    def __init__(self, name: str, teacher: Any, data: list[list[dict[str, Any]]]) -> None:
        import torch

        self.name, self.teacher, self.data = name, teacher, data
        self.loss_fn = teacher.make_loss()
        self.optimizer = torch.optim.AdamW([p for p in teacher.model.parameters() if p.requires_grad], lr=1e-4)
        teacher.model.train()

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Model steps over the epoch's batches: CPU seconds of this process (what
        other processes on the machine do not change much) and wall seconds."""
        teacher = self.teacher
        teacher.on_epoch_start(epoch)  # resets the cache's counters
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in self.data[epoch]:
            loss = self.loss_fn(teacher.forward(teacher.model, batch), batch)["loss"]
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        stats = teacher.cache.stats() if teacher.uses_cache else {"hits": 0, "misses": 0}
        lookups = stats["hits"] + stats["misses"]
        return {"variant": self.name, "epoch": epoch, "step_cpu_s": round(cpu, 3), "step_wall_s": round(wall, 3),
                "hits": stats["hits"], "lookups": lookups,
                "hit_rate": round(stats["hits"] / lookups, 3) if lookups else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", choices=["tiny", "small"], default="small")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from teacherkit.config import AugmentationConfig
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.plugins import get_plugin_manager

    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import ensure_plugins

    torch.set_num_threads(args.threads)
    host = ensure_plugins(get_plugin_manager())
    coco = subset(load_coco(DATA), args.images)
    info = inspect_dataset(coco, host=host)
    augment = host.make_augmentation(AugmentationConfig(), info)
    if augment is None:
        sys.exit("no augmentation plugin: install teacherkit-augment (plugins/teacherkit_augment)")
    make = teacher_factory(host, args.size, args.image_size)
    common = {"max_instances": 8}
    pre = make(**common).make_preprocessor()
    from teacherkit.data.samples import SampleDataset

    def data_for(views: int) -> tuple[list[Any], float]:
        dataset = SampleDataset(coco, DATA.parent, info, pre, learns_from="masks", train=True, augment=augment,
                                with_masks=True, seed=0, augment_views=views or None)
        epochs = [epoch_batches(dataset, pre, e, args.batch) for e in range(args.epochs)]
        return [b for b, _ in epochs], sum(s for _, s in epochs) / len(epochs)

    fresh, data_s = data_for(0)
    Run("warm-up", make(**common, cache_embeddings="off"), fresh[:1]).epoch(0)  # first-call costs, discarded
    runs = [Run("reference", make(**common, cache_embeddings="off"), fresh),
            Run("cache, fresh", make(**common, cache_embeddings="memory", cache_views=0), fresh)]
    for views in args.views:
        runs.append(Run(f"cache, {views} views", make(**common, cache_embeddings="memory", cache_views=views),
                        data_for(views)[0]))
    rows = [run.epoch(epoch) for epoch in range(args.epochs) for run in runs]
    reference = {r["epoch"]: r["step_cpu_s"] for r in rows if r["variant"] == "reference"}
    for row in rows:
        row["ratio_to_reference"] = round(row["step_cpu_s"] / reference[row["epoch"]], 3)
    rows.sort(key=lambda r: [run.name for run in runs].index(r["variant"]))
    print(f"SAM frozen encoder, {args.size} at {args.image_size} px, {args.images} images, batch {args.batch}, default "
          f"augmentation, CPU {args.threads} thread(s); data {data_s:.2f} s/epoch (the same for all)")
    print(f"{'variant':<16} {'epoch':>5} {'hits':>9} {'CPU s':>8} {'wall s':>8} {'x reference CPU':>16}")
    for r in rows:
        print(f"{r['variant']:<16} {r['epoch']:>5} {r['hits']:>4}/{r['lookups']:<4} {r['step_cpu_s']:>8.3f} "
              f"{r['step_wall_s']:>8.3f} {r['ratio_to_reference']:>16.3f}")
    if args.json_out:
        write_record(args, rows, data_s)


def write_record(args: Any, rows: list[dict[str, Any]], data_s: float) -> None:
    import torch
    import transformers

    import teacherkit

    record = {"benchmark": "sam_cache", "date": date.today().isoformat(),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": __import__("os").cpu_count(), "threads": args.threads},
              "versions": {"python": platform.python_version(), "teacherkit": teacherkit.__version__,
                           "torch": torch.__version__, "transformers": transformers.__version__},
              "command": "python " + " ".join(sys.argv),
              "settings": {"images": args.images, "image_size": args.image_size, "batch": args.batch,
                           "epochs": args.epochs, "augmentation": "default (AugmentationConfig())",
                           "model": f"{args.size} SAM (random weights), mode=frozen_encoder, max_instances=8",
                           "views": "SampleDataset(augment_views=K), as the trainer builds it"},
              "unit": "CPU seconds (and wall seconds) of model steps per epoch (forward + loss + backward + "
                      "AdamW), variants interleaved epoch by epoch; data apart",
              "data_s_per_epoch": round(data_s, 3), "rows": rows}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
