"""The SAM plugin's preprocessing next to the straightforward implementation it replaced
(every mask resized whole, points searched in the whole image), timed on one core and
checked for equivalence at the same time.

    python bench/sam_preprocess.py --size tiny                  # seconds on a CPU (CI smoke)
    python bench/sam_preprocess.py --size full --json out.json  # 1024-px input, ~1 min

Two parts: ``targets`` resizes seven stress-case masks per frame into the input frame
(``masks_to_input_frame``); ``preprocess`` runs ``SamPreprocessor.__call__`` over a few
frames for each prompt setting, in training and in evaluation mode. Each row prints
ours, the reference, the speed-up, and whether the outputs agree; the exit status is 1
when any row disagrees. The reference lives with the plugin's equivalence tests
(plugins/teacherkit_sam/tests/sam_reference.py), which check the same at small sizes.
"""

from __future__ import annotations

import os

# one core: set before numpy and torch start their thread pools
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import importlib.util
import itertools
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / "plugins" / "teacherkit_sam" / "tests" / "sam_reference.py"

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"image_size": 96, "repeat": 1, "frames": [(80, 120), (120, 80), (48, 64)]},
    # the frames the equivalence tests ran at 1024 px before they moved here
    "full": {"image_size": 1024, "repeat": 3,
             "frames": [(800, 1200), (1200, 800), (96, 128), (128, 96), (1024, 700), (700, 1024)]},
}
#: (prompt, positive points, negative points, max instances)
PROMPTS = [("box", 1, 0, 64), ("points", 1, 0, 3), ("points", 3, 2, 64), ("mixed", 2, 1, 4)]


def load_reference() -> ModuleType:
    """The reference module, loaded from its file: it is a test helper, not a package."""
    spec = importlib.util.spec_from_file_location("sam_reference", REFERENCE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{REFERENCE}: the reference implementation is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_of(repeat: int, fn: Any, *args: Any) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls ``fn(*args)`` (the least disturbed by other
    processes), and the result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def frame_sample(ref: ModuleType, height: int, width: int, index: int) -> dict[str, Any]:
    """One image with the reference's stress-case masks; boxes come from the masks except one."""
    masks = ref.edge_case_masks(height, width, seed=index)
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    boxes[4] = [3, 4, width / 2, height / 3]
    image = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"image": image, "image_id": index + 1, "file_name": f"frame{index}.png", "orig_size": (height, width),
            "boxes": boxes, "labels": np.zeros(n, np.int64), "category_ids": np.ones(n, np.int64),
            "annotation_ids": np.arange(n, dtype=np.int64), "iscrowd": np.zeros(n, np.int64), "masks": masks,
            "extra": {"seed": index}}


def bench_targets(ref: ModuleType, size: int, frames: list[tuple[int, int]], repeat: int) -> list[dict[str, Any]]:
    from teacherkit_sam.masks import masks_to_input_frame, resized_shape

    rows = []
    for height, width in frames:
        masks = ref.edge_case_masks(height, width, seed=height + width)
        resized = resized_shape(height, width, size)
        ours, fast = best_of(repeat, masks_to_input_frame, masks, resized, size)
        theirs, slow = best_of(repeat, ref.reference_targets, masks, resized, size)
        rows.append({"part": "targets", "case": f"{height}x{width}", "ours_s": ours, "reference_s": theirs,
                     "mismatch": ref.targets_mismatch(fast, slow)})
    return rows


def each_sample(call: Any, samples: list[dict[str, Any]], train: bool) -> list[dict[str, Any]]:
    return [call(sample, train=train) for sample in samples]


def bench_preprocess(ref: ModuleType, size: int, frames: list[tuple[int, int]], repeat: int) -> list[dict[str, Any]]:
    from teacherkit_sam.preprocess import SamPreprocessor

    samples = [frame_sample(ref, h, w, i) for i, (h, w) in enumerate(frames)]
    rows = []
    for (prompt, pos, neg, cap), train in itertools.product(PROMPTS, (True, False)):
        pre = SamPreprocessor(image_size=size, prompt=prompt, num_points=pos, num_negative_points=neg,
                              max_instances=cap, box_jitter=0.1)
        ours, fast = best_of(repeat, each_sample, pre, samples, train)
        theirs, slow = best_of(repeat, each_sample, partial(ref.reference_call, pre), samples, train)
        problems = sorted({p for f, r in zip(fast, slow) for p in ref.preprocessing_mismatches(f, r)})
        rows.append({"part": "preprocess", "case": f"{prompt} {pos}+{neg} max{cap} {'train' if train else 'eval'}",
                     "ours_s": ours, "reference_s": theirs, "mismatch": "; ".join(problems) or None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="tiny: CPU smoke; full: 1024-px input.")
    parser.add_argument("--json", help="Write the figures to this JSON file.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    setting = SIZES[args.size]
    ref = load_reference()
    size, frames, repeat = setting["image_size"], setting["frames"], setting["repeat"]
    rows = bench_targets(ref, size, frames, repeat) + bench_preprocess(ref, size, frames, repeat)
    print(f"SAM preprocessing at {size} px, best of {repeat}, one core")
    for row in rows:
        row["speedup"] = row["reference_s"] / max(row["ours_s"], 1e-9)
        agree = "agree" if row["mismatch"] is None else f"DIFFER: {row['mismatch']}"
        print(f"{row['part']:<10} {row['case']:<30} ours {row['ours_s']:8.4f} s  reference "
              f"{row['reference_s']:8.4f} s  speed {row['speedup']:6.1f}x  {agree}")
    if args.json:
        machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()}
        Path(args.json).write_text(json.dumps({"size": args.size, "image_size": size, "machine": machine,
                                               "rows": rows, "median_speedup": statistics.median(
                                                   r["speedup"] for r in rows)}, indent=2))
    sys.exit(1 if any(r["mismatch"] is not None for r in rows) else 0)


if __name__ == "__main__":
    main()
