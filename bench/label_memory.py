"""Peak memory of `teacherkit label` against the number of images: label a small and a large
folder of tiny images, each in a fresh process, and print both peak RSS figures and their
ratio. Labelling streams (shard files on disk, a streaming COCO writer), so the ratio should
stay near 1 (issue 21 asks for flat within 10%).

    python bench/label_memory.py                              # 2,000 vs 20,000 images
    python bench/label_memory.py --sizes 500 5000 --json-out bench/results/label_memory-DATE.json
    python bench/label_memory.py --experiment runs/exp1       # a trained experiment of yours

Without `--experiment`, a tiny random experiment is trained first (both teachers, the `tiny`
preset, one epoch on 6 synthetic images, like the tests' fixture): the figures are about what
grows with the number of images, not about the model's size.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


def tiny_experiment(root: Path) -> Path:
    """Train the tiny two-teacher experiment the inference tests use."""
    from teacherkit.testing import train_tiny_pair

    return train_tiny_pair(root)


def make_images(folder: Path, count: int, side: int) -> None:
    """``count`` small PNGs of random noise (one pool, the smaller sets are hard links into it)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"{i // 1000:03d}" / f"img_{i:06d}.png"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


def subset(pool: Path, folder: Path, count: int) -> Path:
    files = sorted(pool.rglob("*.png"))[:count]
    for path in files:
        target = folder / path.relative_to(pool)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.hardlink_to(path)
    return folder


def _status_kib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(float(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _reset_peak_once_labelling(shard: Path, stop: threading.Event) -> None:
    """Loading the teachers sets the process's first peak; reset the kernel's peak counter
    (VmHWM) when the first batch is on disk, so the second peak covers labelling and merge."""
    while not stop.is_set():
        if shard.exists():
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            return
        time.sleep(0.01)


def measure(experiment: str, images: str, output: str, batch_size: int) -> None:
    """Run in the fresh child process: label, then print the figures as one JSON line."""
    from teacherkit.cli import run
    from teacherkit.inference.label import partial_path

    stop = threading.Event()
    watcher = threading.Thread(target=_reset_peak_once_labelling, args=(partial_path(Path(output)), stop))
    watcher.start()
    start = time.perf_counter()
    code = run(["label", experiment, "--images", images, "--output", output, "--device", "cpu", "--quiet",
                "--batch-size", str(batch_size), "--score-threshold", "0"])
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, whole run
    print(json.dumps({"rc": code, "seconds": seconds, "peak_rss_mib": peak_kib / 1024,
                      "labelling_peak_rss_mib": _status_kib("VmHWM") / 1024}))


def run_one(experiment: Path, images: Path, output: Path, batch_size: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", str(experiment), str(images), str(output),
                           str(batch_size)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"labelling {images} failed: {done.stderr.strip()[-2000:]}")
    figures = json.loads(lines[-1])
    if figures["rc"] != 0:
        raise SystemExit(f"teacherkit label exited {figures['rc']}: {done.stderr.strip()[-2000:]}")
    annotations = json.loads(output.read_text())["info"]["annotations"]
    return {**figures, "annotations": annotations}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--side", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--experiment", type=Path, help="a trained experiment (default: train a tiny one)")
    parser.add_argument("--workdir", type=Path, help="where images and outputs go (default: a temp folder)")
    parser.add_argument("--json-out", type=Path, help="also write machine, date, versions and figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="label-memory-") as tmp:
        work = args.workdir or Path(tmp)
        experiment = args.experiment or tiny_experiment(work / "tiny")
        make_images(work / "pool", max(args.sizes), args.side)
        rows = {}
        for count in args.sizes:
            images = subset(work / "pool", work / f"images_{count}", count)
            rows[count] = run_one(experiment, images, work / f"labels_{count}.json", args.batch_size)
            print(f"{count:>7d} images: peak RSS {rows[count]['peak_rss_mib']:8.1f} MiB (after loading: "
                  f"{rows[count]['labelling_peak_rss_mib']:.1f} MiB), "
                  f"{rows[count]['seconds']:7.1f} s ({count / rows[count]['seconds']:.1f} img/s), "
                  f"{rows[count]['annotations']} annotations", flush=True)
        small, large = args.sizes
        ratio = rows[large]["peak_rss_mib"] / rows[small]["peak_rss_mib"]
        labelling = rows[large]["labelling_peak_rss_mib"] / rows[small]["labelling_peak_rss_mib"]
        print(f"peak RSS ratio {large} / {small} images: {ratio:.3f} (after loading: {labelling:.3f})")
        if args.json_out:
            _write_json(args, rows, {"peak_rss_ratio": ratio, "labelling_peak_rss_ratio": labelling})
    return 0


def _write_json(args: argparse.Namespace, rows: dict, ratios: dict[str, float]) -> None:
    import numpy
    import torch
    import transformers

    import teacherkit

    record = {
        "benchmark": "label_memory",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "python": platform.python_version(), "cpus_visible": len(__import__("os").sched_getaffinity(0))},
        "versions": {"teacherkit": teacherkit.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": numpy.__version__},
        "settings": {"sizes": args.sizes, "side": args.side, "batch_size": args.batch_size,
                     "experiment": str(args.experiment) if args.experiment else "tiny random (trained by the bench)",
                     "device": "cpu"},
        "figures": {str(count): row for count, row in rows.items()},
        **ratios,
        "note": "peak_rss: whole run (loading the teachers sets it); labelling_peak_rss: the kernel's peak "
                "counter reset once the first batch is on disk, so it covers labelling and the merge",
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
