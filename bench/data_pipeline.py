"""Data pipeline throughput: image read + augmentation + the teacher's preprocessing + collate,
per DataLoader worker, and how many workers keep a GPU step fed.

For each teacher (Grounding DINO, SAM) it builds the trainer's dataset
(``teacherkit.data.samples.SampleDataset``, with the arguments ``teacherkit train`` gives it)
with the plugin's preprocessor and the augmentation plugin's pipeline (medium intensity),
then measures

* per stage, in this process alone: CPU milliseconds per image to read (image + annotations),
  augment, preprocess and collate, their sum as img/s of one worker, and the megabytes of
  each preprocessed item (what a worker sends to the main process);
* the DataLoader with 0..``--max-workers`` workers (wall img/s, collate included);
* ``workers needed`` = ceil(GPU step img/s / one worker's img/s). The reference GPU rates
  are the plain transformers + peft loop's on an H200 (the project's perf notes) unless
  ``--gpu-rate`` gives your card's.

Only public parts are used (``raw_sample``, ``augment``, ``preprocessor`` and its
``collate``, ``DataLoader``), so the bench measures whatever the pipeline does now.

    python bench/data_pipeline.py --size tiny                # seconds, CI smoke
    python bench/data_pipeline.py --size full --max-workers 8 --json bench/results/data_pipeline-DATE.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: image size of the generated files, items measured, preprocessing sizes
SIZES = {
    "tiny": {"image": (96, 128), "items": 12, "dino_edges": (96, 128), "sam": 64, "objects": 3},
    "full": {"image": (800, 1200), "items": 48, "dino_edges": (800, 1333), "sam": 1024, "objects": 6},
}
#: GPU step rates (img/s) the loader must match, by row; replace with your card's figures
DEFAULT_GPU_RATE = {"grounding_dino": 28.0, "sam": 30.0, "sam frozen, fresh view": 80.0,
                    "sam frozen, recorded view": 431.0}
#: where the defaults come from
DEFAULT_GPU_RATE_SOURCE = ("plain transformers + peft LoRA loop, batch 8, one H200 (GDINO-T 27.9, SAM ViT-B "
                           "30.4 img/s; the project's perf notes, 2026-11-26)")
SOURCES = {"sam frozen, fresh view": "the plain frozen-encoder SAM loop, batch 8, one H200 (79.6 img/s; the perf "
                                     "notes): the pace of epochs before the views repeat, bound by the encoder",
           "sam frozen, recorded view": "teacherkit's cached frozen-encoder SAM step, batch 64, six prompts per "
                                        "image, one H200 (431.6 img/s; bench/results/train_throughput-gpu-sam-"
                                        "frozen-2026-11-30.json)"}


def build_datasets(root: Path, size: dict[str, Any]) -> list[tuple[str, Any]]:
    """The trainer's dataset for each teacher, over a generated COCO folder."""
    from teacherkit.config import AugmentationConfig
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.data.samples import SampleDataset
    from teacherkit.data.synthetic import make_coco_dataset
    from teacherkit.plugins import get_plugin_manager

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import ensure_plugins

    height, width = size["image"]
    path = make_coco_dataset(root, num_images=size["items"], size=(height, width), image_ext="jpg",
                             max_objects=size["objects"], seed=0)
    host = ensure_plugins(get_plugin_manager())
    coco = load_coco(path)
    info = inspect_dataset(coco, host=host)
    augment = host.make_augmentation(
        AugmentationConfig(characteristics=["changes_shape"], environment={"lighting": "variable"},
                           intensity="medium"), info)
    out = []
    for name in ("grounding_dino", "sam"):
        spec = host.teacher(name)
        model = host.config_model()
        section = type(model().teacher(name))
        if name == "grounding_dino":
            shortest, longest = size["dino_edges"]
            cfg = section(base="tiny", shortest_edge=shortest, longest_edge=longest)
        else:
            cfg = section(base="tiny", image_size=size["sam"])
        teacher = host.load_model(spec, cfg, info, root / "work")
        pre = host.make_preprocessor(spec, cfg, teacher)
        dataset = SampleDataset(coco, path.parent, info, pre, learns_from=spec.learns_from, train=True,
                                augment=augment, with_masks=spec.learns_from == "masks" or info.has_masks)
        out.append((name, dataset))
    return out + frozen_sam_datasets(root, host, coco, path.parent, info, augment, size)


class AllHeld:
    """Stands in for a cache that holds every view's embedding (the cached phase's steady state)."""

    def __call__(self, key: str) -> bool:
        return True


def frozen_sam_datasets(root: Path, host: Any, coco: Any, images: Path, info: Any, augment: Any,
                        size: dict[str, Any]) -> list[tuple[str, Any]]:
    """SAM with a frozen, cached encoder and its 2 views per image, as ``teacherkit train`` builds it:
    an epoch < 2 (each view read, augmented, hashed for the cache and recorded) and an epoch >= 2
    (each view rebuilt from its record without pixels, every embedding held)."""
    import dataclasses

    from teacherkit.data.samples import SampleDataset
    from teacherkit.data.view_records import run_view_records

    spec = host.teacher("sam")
    section = type(host.config_model()().teacher("sam"))
    cfg = section(base="tiny", image_size=size["sam"], mode="frozen_encoder")
    teacher = host.load_model(spec, cfg, info, root / "frozen")
    pre = host.make_preprocessor(spec, cfg, teacher)
    views = teacher.augmentation_views()
    kwargs = {"learns_from": "masks", "train": True, "augment": augment, "with_masks": True, "augment_views": views}
    fresh = SampleDataset(coco, images, info, pre, view_records=run_view_records(root / "frozen", 0, pre), **kwargs)
    for index in range(len(fresh)):  # epoch 0 records view 0 of every image
        fresh[index]
    recorded = SampleDataset(coco, images, info, dataclasses.replace(pre, held=AllHeld()),
                             view_records=fresh.view_records, **kwargs)
    recorded.set_epoch(views)  # view 0 again
    return [("sam frozen, fresh view", fresh), ("sam frozen, recorded view", recorded)]


def _nbytes(value: Any) -> int:
    """Bytes of the arrays and tensors in a preprocessed item: what a worker pickles to the
    main process (the item's dict, lists and tuples are walked one level at a time)."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor
        return int(value.element_size() * value.numel())
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def one_worker(dataset: Any, batch: int) -> dict[str, float]:
    """This process alone (no DataLoader): CPU milliseconds per image of each stage — read
    (decode the image and its annotations), augment, preprocess, collate — and the img/s they
    add up to. CPU time of this process, so other work on the machine does not count."""
    stages = {"read": 0.0, "augment": 0.0, "preprocess": 0.0, "collate": 0.0}
    items, item_bytes = [], 0
    staged = hasattr(dataset, "raw_sample")  # without it only the whole item can be timed
    views = getattr(dataset, "augment_views", None)
    recorded = getattr(dataset, "view_records", None) is not None and dataset.epoch >= views
    for index in range(len(dataset)):
        t0 = time.process_time()
        if recorded:  # "read" is the record (its masks' RLE decoded); nothing to augment
            sample = dataset.view_records.get(index, dataset.epoch % views)
            sample["extra"]["seed"] = index
            t1 = time.process_time()
            item = dataset.preprocessor(sample, train=True)
            stages["read"] += t1 - t0
            stages["preprocess"] += time.process_time() - t1
        elif staged:
            sample = dataset.raw_sample(index)
            t1 = time.process_time()
            if dataset.augment is not None:
                sample = dataset.augment(sample, int(sample["extra"]["seed"]))
            t2 = time.process_time()
            if views and dataset.view_records is not None:  # a cached encoder's view: keyed and recorded
                key = dataset.preprocessor.view_key(sample)
                dataset.view_records.put(index, 1, sample, key)
                sample["view_key"] = key
            item = dataset.preprocessor(sample, train=True)
            t3 = time.process_time()
            stages["read"] += t1 - t0
            stages["augment"] += t2 - t1
            stages["preprocess"] += t3 - t2
        else:
            item = dataset[index]
            stages["preprocess"] += time.process_time() - t0
        item_bytes += _nbytes(item)
        items.append(item)
    for start in range(0, len(items), batch):
        t0 = time.process_time()
        dataset.preprocessor.collate(items[start : start + batch])
        stages["collate"] += time.process_time() - t0
    n = len(dataset)
    total = sum(stages.values())
    out = {f"{name}_ms": 1e3 * sec / n for name, sec in stages.items()}
    return {"img_per_s": n / max(total, 1e-9), **out, "total_ms": 1e3 * total / n, "staged": staged,
            "mb_per_item": item_bytes / n / 2**20}


def loader_rate(dataset: Any, workers: int, batch: int) -> float:
    """Images per second (wall) through a DataLoader (collate included), first batch excluded
    (worker start-up)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=dataset.preprocessor.collate,
                        shuffle=False)
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for b in it:
        count += len(b["image_ids"])
    return count / max(time.perf_counter() - start, 1e-9)


def print_row(name: str, row: dict[str, Any]) -> None:
    single, rate = row["one_worker"], row["gpu_rate"]
    print(f"{name:15s} per image (CPU ms): read {single['read_ms']:.1f}, augment {single['augment_ms']:.1f}, "
          f"preprocess {single['preprocess_ms']:.1f}, collate {single['collate_ms']:.1f}; "
          f"total {single['total_ms']:.1f} = {single['img_per_s']:.1f} img/s per worker; "
          f"{single['mb_per_item']:.1f} MB per item to the main process")
    print(f"{name:15s} loader (wall) " + ", ".join(f"{w} workers {r:.1f} img/s"
                                                    for w, r in row["loader_img_per_s"].items()))
    print(f"{name:15s} workers needed for {rate:.0f} img/s on the GPU: {row['workers_needed']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--gpu-rate", action="append", default=[], metavar="TEACHER=IMG_PER_S",
                        help="GPU step rate to feed, e.g. grounding_dino=60 (repeatable)")
    parser.add_argument("--items", type=int, default=None, help="images per teacher (default by size)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write machine, date, versions, command and figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rates = dict(DEFAULT_GPU_RATE)
    sources = {name: SOURCES.get(name, DEFAULT_GPU_RATE_SOURCE) for name in rates}
    for item in args.gpu_rate:
        name, _, value = item.partition("=")
        rates[name], sources[name] = float(value), "--gpu-rate"
    size = SIZES[args.size] if args.items is None else {**SIZES[args.size], "items": args.items}
    print(f"# data_pipeline size={args.size} image={size['image']} cpu={platform.processor() or platform.machine()} "
          f"cores={os.cpu_count()} date={time.strftime('%Y-%m-%d')}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset in build_datasets(Path(tmp), size):
            single = one_worker(dataset, args.batch)
            loaders = {w: loader_rate(dataset, w, args.batch) for w in range(0, args.max_workers + 1)}
            needed = math.ceil(rates[name] / single["img_per_s"])
            row = {"teacher": name, "one_worker": single, "loader_img_per_s": loaders,
                   "gpu_rate": rates[name], "gpu_rate_source": sources[name], "workers_needed": needed}
            results.append(row)
            print_row(name, row)
    if args.json:
        from train_throughput import run_record  # on sys.path since build_datasets

        record = {"kind": "data_pipeline", **run_record("bench/data_pipeline.py", argv),
                  "size": args.size, "settings": {**size, "batch": args.batch, "threads": 1,
                                                  "augmentation": "medium (changes_shape, lighting variable)"},
                  "results": results}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
