"""Peak memory of `teacherkit label` against the number of images: label a small and a large
folder of tiny images, each in a fresh process, and print both peak memory figures and their
ratio. Labelling streams (shard files on disk, a streaming COCO writer), so the ratio should
stay near 1 (issue 21 asks for flat within 10%).

    python bench/label_memory.py                              # 2,000 vs 20,000 images
    python bench/label_memory.py --sizes 200 2000 --workers 2 --json-out /tmp/label_memory.json
    python bench/label_memory.py --experiment runs/exp1       # a trained experiment of yours

Without `--experiment`, a tiny random experiment is trained first (both teachers, the `tiny`
preset, one epoch on 6 synthetic images, like the tests' fixture): the figures are about what
grows with the number of images, not about the model's size.

The images are `--distinct` random PNGs, hard-linked under distinct names up to the size
asked (20,000 names cost a second to make); labelling opens and decodes every name.

What is measured (each size in a fresh process; `--workers` is passed to `teacherkit label`
only when its `--help` lists the option; DataLoader worker processes are the labelling
process's descendants):

- `peak_rss_mib`: the labelling process alone, the kernel's exact peak (ru_maxrss of
  RUSAGE_SELF) over the whole run; loading the teachers usually sets it.
- `labelling_peak_rss_mib`: the same process, its peak counter (VmHWM) reset once labelling
  starts (the shard file appears), so it covers labelling and the merge.
- `tree_peak_rss_mib` (the headline, ratio `tree_peak_rss_ratio`): `peak_rss_mib` plus the
  sum of every descendant's own peak (VmHWM, read from /proc every `--interval` s while it
  lives). An upper bound of the tree's RSS: the peaks are added as if simultaneous, and pages
  a forked worker shares with its parent count in both. `labelling_tree_peak_rss_mib`: the
  same from `labelling_peak_rss_mib` and the descendants alive once labelling started.
- `children_peak_rss_mib`: ru_maxrss of RUSAGE_CHILDREN after the run, the kernel's figure
  for the largest single child (a check on the sampled peaks); 0 without children.
- `tree_peak_pss_mib`: the largest PSS sum (shared pages divided among their sharers: the
  tree's real footprint) over the process and its descendants, sampled every `--pss-every` s
  only (reading PSS walks the page tables), so it can miss short peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


def make_images(folder: Path, count: int, side: int, distinct: int = 256) -> Path:
    """``count`` PNG names under ``folder`` (1,000 per sub-folder): ``distinct`` random
    ``side``-px images in ``folder/../pool-<side>``, each name a hard link to one of them."""
    import numpy as np
    from PIL import Image

    pool = folder.parent / f"pool-{side}"
    pool.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for i in range(min(distinct, count)):
        source = pool / f"src_{i:05d}.png"
        if not source.exists():
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(source)
        sources.append(source)
    for i in range(count):
        path = folder / f"{i // 1000:03d}" / f"img_{i:06d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.hardlink_to(sources[i % len(sources)])
    return folder


def workers_in_help(text: str) -> tuple[bool, str | None]:
    """Whether a ``label --help`` text lists ``--workers``, and its default as printed there."""
    block = re.search(r"--workers\b(.*?)(?=\n\s*(?:-\w,\s*)?--[a-z]|\Z)", text, flags=re.S)
    if block is None:
        return False, None
    # "[default: 2]" (typer) or "(default: 2, or 1 with one CPU; ...)" (in the help text)
    default = re.search(r"[\[(]default:\s*([^;\])]+)", block.group(1))
    return True, " ".join(default.group(1).split()) if default else None


def label_workers_option() -> tuple[bool, str | None]:
    """:func:`workers_in_help` of this installation's ``teacherkit label --help``."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-m", "teacherkit", "label", "--help"], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"teacherkit label --help failed: {done.stderr.strip()[-2000:]}")
    return workers_in_help(done.stdout)


def workers_setting(asked: int | None) -> tuple[list[str], dict]:
    """The ``--workers`` argument to pass (none when label lacks the option or none was
    asked) and what to record about it."""
    listed, default = label_workers_option()
    if asked is not None and not listed:
        print(f"note: teacherkit label has no --workers option; --workers {asked} is not passed", file=sys.stderr)
    passed = asked if listed else None
    in_effect: int | str | None = passed if passed is not None else default
    if passed is None and listed:
        try:  # the number label's default gives on this machine
            from teacherkit.inference.label_loader import default_workers

            in_effect = default_workers()
        except ImportError:
            pass
    record = {"option_listed": listed, "passed": passed, "label_default": default, "in_effect": in_effect}
    return (["--workers", str(passed)] if passed is not None else []), record


# ---- the child: one labelling run in a fresh process ----------------------------------------------


def _status_kib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(float(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _reset_peak_once_labelling(shard: Path, stop: threading.Event, started: list[float]) -> None:
    """Loading the teachers sets the process's first peak; reset the kernel's peak counter
    (VmHWM) when labelling starts (its shard file appears), so the second peak covers
    labelling and the merge. ``started`` gets the time of the reset."""
    while not stop.is_set():
        if shard.exists():
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            started.append(time.perf_counter())
            return
        time.sleep(0.01)


def measure(experiment: str, images: str, output: str, batch_size: int, extra: list[str]) -> None:
    """Run in the fresh child process: label, then print the figures as one JSON line."""
    from teacherkit.cli import run
    from teacherkit.inference.label import partial_path

    stop, started = threading.Event(), []
    watcher = threading.Thread(target=_reset_peak_once_labelling, args=(partial_path(Path(output)), stop, started))
    watcher.start()
    start = time.perf_counter()
    code = run(["label", experiment, "--images", images, "--output", output, "--device", "cpu", "--quiet",
                "--batch-size", str(batch_size), "--score-threshold", "0", *extra])
    end = time.perf_counter()
    stop.set()
    watcher.join()
    # ru_maxrss and VmHWM in KiB (Linux)
    print(json.dumps({"rc": code, "seconds": end - start, "labelling_seconds": end - started[0] if started else None,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "labelling_peak_rss_mib": _status_kib("VmHWM") / 1024,
                      "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


# ---- the parent: start the child, sample its process tree -----------------------------------------


def descendants(root: int) -> list[int]:
    """Every living descendant of ``root``, from each thread's /proc children list (a
    DataLoader may fork from any thread), else from a scan of every process's parent."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            lists = [f"/proc/{pid}/task/{tid}/children" for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue  # ended while we looked
        if lists and not os.path.exists(lists[0]):  # a kernel without CONFIG_PROC_CHILDREN
            return _descendants_by_scan(root)
        for path in lists:
            try:
                with open(path, encoding="ascii") as fh:
                    kids = [int(kid) for kid in fh.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _descendants_by_scan(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # not a process, or ended while we looked
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _read_kib(path: str, field: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(field + ":")), None)
    except OSError:
        return None


class TreeSampler:
    """What the labelling process's descendants (DataLoader workers) used: each one's own
    kernel peak (VmHWM, read every sample; it only grows, so the last read misses at most
    the growth of a worker's last interval), and the tree's PSS sum every ``pss_every``
    seconds (reading PSS walks the page tables: too slow to do every sample)."""

    def __init__(self, root: int, pss_every: float) -> None:
        self.root, self.pss_every, self.next_pss = root, pss_every, 0.0
        self.peaks: dict[int, int] = {}  # descendant pid -> its VmHWM, KiB
        self.in_labelling: set[int] = set()  # descendants alive once labelling had started
        self.pss_kib = 0

    def sample(self, labelling: bool) -> None:
        kids = descendants(self.root)
        for pid in kids:
            hwm = _read_kib(f"/proc/{pid}/status", "VmHWM")
            if hwm is not None:
                self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
                if labelling:
                    self.in_labelling.add(pid)
        if time.monotonic() >= self.next_pss:
            self.next_pss = time.monotonic() + self.pss_every
            pss = sum(_read_kib(f"/proc/{pid}/smaps_rollup", "Pss") or 0 for pid in [self.root, *kids])
            self.pss_kib = max(self.pss_kib, pss)

    def figures(self, own_peak_mib: float, own_labelling_peak_mib: float) -> dict:
        workers = sum(self.peaks.values()) / 1024
        in_labelling = sum(self.peaks[pid] for pid in self.in_labelling) / 1024
        return {"descendants": len(self.peaks), "descendants_peak_rss_sum_mib": workers,
                "tree_peak_rss_mib": own_peak_mib + workers,
                "labelling_tree_peak_rss_mib": own_labelling_peak_mib + in_labelling,
                "tree_peak_pss_mib": self.pss_kib / 1024}


def run_one(experiment: Path, images: Path, output: Path, batch_size: int, extra: list[str],
            interval: float = 0.1, pss_every: float = 1.0) -> dict:
    """Label ``images`` in a fresh process while sampling its process tree; the figures."""
    from teacherkit.inference.label import partial_path

    # to files, not pipes: nobody reads a pipe while this loop samples
    with open(output.with_name(output.name + ".out"), "w+", encoding="utf-8") as out, \
            open(output.with_name(output.name + ".err"), "w+", encoding="utf-8") as err, subprocess.Popen(
            [sys.executable, __file__, "--measure", str(experiment), str(images), str(output), str(batch_size), *extra],
            stdout=out, stderr=err, text=True) as child:
        sampler = TreeSampler(child.pid, pss_every)
        while child.poll() is None:
            sampler.sample(labelling=partial_path(output).exists() or output.exists())
            time.sleep(interval)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"labelling {images} failed: {stderr.strip()[-2000:]}")
    figures = json.loads(lines[-1])
    if figures["rc"] != 0:
        raise SystemExit(f"teacherkit label exited {figures['rc']}: {stderr.strip()[-2000:]}")
    annotations = json.loads(output.read_text())["info"]["annotations"]
    return {**figures, **sampler.figures(figures["peak_rss_mib"], figures["labelling_peak_rss_mib"]),
            "annotations": annotations}


def _ratio(large: float, small: float) -> float | None:
    return large / small if small else None  # a run too short for one PSS sample has no PSS figure


def _print_row(count: int, row: dict) -> None:
    rate = f"{count / row['labelling_seconds']:.1f}" if row["labelling_seconds"] else "n/a"
    print(f"{count:>7d} images: {row['seconds']:7.1f} s ({count / row['seconds']:.1f} img/s; labelling {rate} img/s), "
          f"{row['annotations']} annotations; peak RSS MiB: labelling process {row['peak_rss_mib']:.1f} "
          f"(labelling {row['labelling_peak_rss_mib']:.1f}), with its {row['descendants']} worker(s) "
          f"{row['tree_peak_rss_mib']:.1f} (labelling {row['labelling_tree_peak_rss_mib']:.1f}); "
          f"tree PSS {row['tree_peak_pss_mib']:.1f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--side", type=int, default=32, help="image side in pixels")
    parser.add_argument("--distinct", type=int, default=256, help="distinct images behind the hard-linked names")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, help="label --workers (passed only when label lists the option)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between reads of the workers' peaks")
    parser.add_argument("--pss-every", type=float, default=1.0, help="seconds between PSS sums of the tree")
    parser.add_argument("--experiment", type=Path, help="a trained experiment (default: train a tiny one)")
    parser.add_argument("--workdir", type=Path, help="where images and outputs go (default: a temp folder)")
    parser.add_argument("--json-out", type=Path, help="also write machine, date, versions and figures here")
    args = parser.parse_args(argv)
    extra, workers = workers_setting(args.workers)

    with tempfile.TemporaryDirectory(prefix="label-memory-") as tmp:
        work = args.workdir or Path(tmp)
        experiment = args.experiment or tiny_experiment(work / "tiny")
        rows = {}
        for count in args.sizes:
            images = make_images(work / f"images_{count}", count, args.side, args.distinct)
            output = work / f"labels_{count}.json"
            output.unlink(missing_ok=True)
            rows[count] = run_one(experiment, images, output, args.batch_size, extra, args.interval, args.pss_every)
            _print_row(count, rows[count])
        small, large = args.sizes
        ratios = {f"{key}_ratio": _ratio(rows[large][f"{key}_mib"], rows[small][f"{key}_mib"])
                  for key in ("tree_peak_rss", "labelling_tree_peak_rss", "peak_rss", "labelling_peak_rss",
                              "tree_peak_pss")}
        shown = {key: "n/a" if value is None else f"{value:.3f}" for key, value in ratios.items()}
        print(f"peak RSS ratio {large} / {small} images, with the workers: {shown['tree_peak_rss_ratio']} "
              f"(labelling {shown['labelling_tree_peak_rss_ratio']}); labelling process alone: "
              f"{shown['peak_rss_ratio']} (labelling {shown['labelling_peak_rss_ratio']}); "
              f"tree PSS: {shown['tree_peak_pss_ratio']}")
        if args.json_out:
            _write_json(args, rows, ratios, workers)
    return 0


def _write_json(args: argparse.Namespace, rows: dict, ratios: dict[str, float], workers: dict) -> None:
    import numpy
    import peft
    import torch
    import transformers

    import teacherkit

    record = {
        "benchmark": "label_memory",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "cpus_visible": len(os.sched_getaffinity(0))},
        "versions": {"teacherkit": teacherkit.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__, "numpy": numpy.__version__},
        "settings": {"sizes": args.sizes, "side": args.side, "distinct_images": args.distinct,
                     "batch_size": args.batch_size, "workers": workers, "sample_interval_s": args.interval,
                     "pss_every_s": args.pss_every,
                     "experiment": str(args.experiment) if args.experiment else "tiny random (trained by the bench)",
                     "device": "cpu"},
        "figures": {str(count): row for count, row in rows.items()},
        **ratios,
        "measured": {
            "tree_peak_rss_mib": "headline: peak_rss_mib plus the sum of every descendant's (DataLoader worker's) "
                                 "own peak, VmHWM read from /proc every sample_interval_s while it lives; an upper "
                                 "bound (peaks added as if simultaneous, pages shared after fork counted in each)",
            "labelling_tree_peak_rss_mib": "labelling_peak_rss_mib plus the peaks of the descendants alive once "
                                           "labelling started",
            "peak_rss_mib": "labelling process alone: ru_maxrss of RUSAGE_SELF (kernel peak), whole run; loading "
                            "the teachers usually sets it",
            "labelling_peak_rss_mib": "labelling process alone: VmHWM reset when labelling starts (the shard "
                                      "file appears), so labelling and the merge",
            "labelling_seconds": "from the shard file appearing (teachers loaded) to the end of the run",
            "descendants_peak_rss_sum_mib": "the sum of the descendants' own peaks (in tree_peak_rss_mib)",
            "children_peak_rss_mib": "ru_maxrss of RUSAGE_CHILDREN after the run: the kernel's peak of the "
                                     "largest single child, 0 without children",
            "tree_peak_pss_mib": "largest PSS sum (shared pages divided among their sharers) over the labelling "
                                 "process and its descendants, sampled every pss_every_s only",
        },
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
