"""Data pipeline throughput: image read + augmentation + the teacher's preprocessing, per
DataLoader worker, and how many workers keep a GPU step fed.

For each teacher (Grounding DINO, SAM) it builds the trainer's own ``CocoTrainDataset``
with the plugin's preprocessor and the augmentation plugin's pipeline (medium
intensity), then measures

* one worker: items per second in the main process (read, augment, preprocess), with
  the share of each stage;
* the DataLoader with 1..``--max-workers`` workers (collate included);
* ``workers needed`` = ceil(GPU step img/s / one worker's img/s), for the GPU step
  rates given with ``--gpu-rate`` (defaults: the teacherkit rates measured by
  ``bench/train_throughput.py --size full``, see docs/performance.md).

    python bench/data_pipeline.py --size tiny                # seconds, CI smoke
    python bench/data_pipeline.py --size full --max-workers 8
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
#: GPU step rates (img/s) the loader must match, by teacher; replace with your card's figures
DEFAULT_GPU_RATE = {"grounding_dino": 28.0, "sam": 30.0}


def build_datasets(root: Path, size: dict[str, Any]) -> list[tuple[str, Any]]:
    """The trainer's dataset for each teacher, over a generated COCO folder."""
    from teacherkit.config import AugmentationConfig
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.data.synthetic import make_coco_dataset
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.dataset import CocoTrainDataset

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
        dataset = CocoTrainDataset(coco, path.parent, info, pre, learns_from=spec.learns_from, train=True,
                                   augment=augment, with_masks=spec.learns_from == "masks" or info.has_masks)
        out.append((name, dataset))
    return out


def one_worker(dataset: Any) -> dict[str, float]:
    """Items per second in this process, and the seconds per item of each stage."""
    read = aug = pre = 0.0
    for index in range(len(dataset)):
        t0 = time.perf_counter()
        sample = dataset.raw_sample(index)
        t1 = time.perf_counter()
        if dataset.augment is not None:
            sample = dataset.augment(sample, int(sample["extra"]["seed"]))
        t2 = time.perf_counter()
        dataset.preprocessor(sample, train=True)
        t3 = time.perf_counter()
        read, aug, pre = read + t1 - t0, aug + t2 - t1, pre + t3 - t2
    n = len(dataset)
    total = read + aug + pre
    return {"img_per_s": n / total, "read_ms": 1e3 * read / n, "augment_ms": 1e3 * aug / n,
            "preprocess_ms": 1e3 * pre / n}


def loader_rate(dataset: Any, workers: int, batch: int) -> float:
    """Images per second through a DataLoader (collate included), first batch excluded
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--gpu-rate", action="append", default=[], metavar="TEACHER=IMG_PER_S",
                        help="GPU step rate to feed, e.g. grounding_dino=60 (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rates = dict(DEFAULT_GPU_RATE)
    for item in args.gpu_rate:
        name, _, value = item.partition("=")
        rates[name] = float(value)
    size = SIZES[args.size]
    print(f"# data_pipeline size={args.size} image={size['image']} cpu={platform.processor() or platform.machine()} "
          f"cores={os.cpu_count()} date={time.strftime('%Y-%m-%d')}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset in build_datasets(Path(tmp), size):
            single = one_worker(dataset)
            loaders = {w: loader_rate(dataset, w, args.batch) for w in range(0, args.max_workers + 1)}
            needed = math.ceil(rates[name] / single["img_per_s"])
            row = {"teacher": name, "one_worker": single, "loader_img_per_s": loaders,
                   "gpu_rate": rates[name], "workers_needed": needed}
            results.append(row)
            print(f"{name:15s} one worker {single['img_per_s']:7.1f} img/s (read {single['read_ms']:.1f} ms, "
                  f"augment {single['augment_ms']:.1f} ms, preprocess {single['preprocess_ms']:.1f} ms per image)")
            print(f"{name:15s} loader " + ", ".join(f"{w} workers {r:.1f} img/s" for w, r in loaders.items()))
            print(f"{name:15s} workers needed for {rates[name]:.0f} img/s on the GPU: {needed}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
