"""Images per second of `teacherkit label` in 1 and in 2 processes on the CPU (and on the GPU
when CUDA is present), on the same folder of images, and whether the outputs are
byte-identical.

    python bench/label_throughput.py                               # 1,000 64-px images
    python bench/label_throughput.py --images 100 --json-out /tmp/label_throughput.json
    python bench/label_throughput.py --workers 1 --threads 2       # label --workers 1, 2 CPU threads

The runs, one after the other on the same images, each a fresh command:

- `plain`: `python -m teacherkit label ...`: 1 process with T torch threads;
- `torchrun-1`: `torchrun --standalone --nproc_per_node 1 -m teacherkit label ...`: 1 × T;
- `torchrun-2`: the same with `--nproc_per_node 2` (gloo): 2 processes × T/2 threads, so both
  sides get the same CPU budget (on 2 cores: 1 × 2 threads against 2 × 1 thread);
- `plain-threads-<T/2>`: 1 process × T/2 threads, the same threads per process as `torchrun-2`;
- with CUDA (unless `--no-gpu`): `plain-cuda`, and with two GPUs or more `torchrun-<n>-cuda`,
  one process per GPU.

T is `--threads` (default: the CPUs this process may use). The threads are set through
OMP_NUM_THREADS and MKL_NUM_THREADS, which torch reads at start (teacherkit does not change
them); each run records what `torch.get_num_threads()` reports under that environment.
torchrun is started as `python -m torch.distributed.run` (what the `torchrun` script runs).
`--workers` is passed to `teacherkit label` only when its `--help` lists the option.

With `--repeat R` every run is made R times, in rounds, and keeps its fastest attempt (all are
in the JSON). Two rates per run: `images_per_s` over the whole command (start-up, loading the teachers,
labelling, merge) and `labelling_images_per_s` from the moment the first shard file appears
(teachers loaded, processes met) to the moment the COCO file appears (merge done), polled
every 10 ms.

Outputs: runs on the same device with the same threads per process must be byte-identical
whatever the number of processes (exit status 1 when not). Another number of threads may
change the last bits of a float sum, and so a mask pixel at the threshold; the JSON records
whether all runs of a device agree, but that does not fail the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_memory import make_images, tiny_experiment, workers_setting  # the bench folder, put on the path above


@dataclass
class Run:
    """One labelling command and what it measured."""

    name: str
    processes: int
    threads_per_process: int
    device: str
    launcher: str  # "none" or "torchrun"
    command: list[str] = field(default_factory=list)
    torch_threads: int | None = None
    images: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    labelling_seconds: float | None = None
    labelling_images_per_s: float | None = None
    output_sha256: str = ""
    attempts: list[dict] = field(default_factory=list)  # every repeat; the figures above are the fastest


def plan_runs(threads: int, gpus: int) -> list[Run]:
    """The runs to make: plain and torchrun with 1 and 2 processes on the CPU (and 1 process
    with the threads of each of the 2, whose output must match theirs), then the GPU ones."""
    half = max(1, threads // 2)
    runs = [Run("plain", 1, threads, "cpu", "none"), Run("torchrun-1", 1, threads, "cpu", "torchrun"),
            Run("torchrun-2", 2, half, "cpu", "torchrun")]
    if half != threads:
        runs.append(Run(f"plain-threads-{half}", 1, half, "cpu", "none"))
    if gpus >= 1:
        runs.append(Run("plain-cuda", 1, threads, "cuda", "none"))
    if gpus >= 2:
        runs.append(Run(f"torchrun-{gpus}-cuda", gpus, max(1, threads // gpus), "cuda", "torchrun"))
    return runs


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def torch_threads(threads: int, cache: dict[int, int]) -> int:
    """What torch reports under the environment a run gets (asked once per setting)."""
    if threads not in cache:
        done = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                              capture_output=True, text=True, env=thread_env(threads), check=True)
        cache[threads] = int(done.stdout.split()[-1])
    return cache[threads]


def label_command(run: Run, experiment: Path, images: Path, output: Path, batch_size: int,
                  extra: list[str]) -> list[str]:
    launcher = [sys.executable]
    if run.launcher == "torchrun":
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(run.processes)]
    return [*launcher, "-m", "teacherkit", "label", str(experiment), "--images", str(images), "--output",
            str(output), "--device", run.device, "--quiet", "--batch-size", str(batch_size),
            "--score-threshold", "0", *extra]


def measure(run: Run, command: list[str], count: int, output: Path) -> dict:
    """Run ``command`` once and time it: the whole command, and from the first shard file
    to the COCO file. The attempt's figures (also appended to ``run.attempts``)."""
    from teacherkit.inference.label import partial_path

    run.command, run.images = command, count
    output.unlink(missing_ok=True)
    log = output.with_name(output.name + ".log")
    first = done = None
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out, subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=thread_env(run.threads_per_process)) as proc:
        while proc.poll() is None:
            now = time.perf_counter()
            # rank 0's shard appears after every process has loaded the teachers and met the others
            if first is None and partial_path(output).exists():
                first = now
            if done is None and output.exists():
                done = now
            time.sleep(0.01)
    end = time.perf_counter()
    if proc.returncode != 0 or not output.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"run {run.name} failed (exit {proc.returncode}): {' '.join(command)}\n{tail}")
    labelling = (done or end) - first if first is not None else None
    attempt = {"seconds": end - start, "images_per_s": count / (end - start), "labelling_seconds": labelling,
               "labelling_images_per_s": count / labelling if labelling else None,
               "output_sha256": hashlib.sha256(output.read_bytes()).hexdigest()}
    run.attempts.append(attempt)
    return attempt


def keep_best(run: Run) -> None:
    """The run's figures are those of its fastest attempt (labelling rate, else whole
    command): on a shared machine the slower ones measure the neighbours."""
    best = max(run.attempts, key=lambda a: (a["labelling_images_per_s"] or 0, a["images_per_s"]))
    run.seconds, run.images_per_s = best["seconds"], best["images_per_s"]
    run.labelling_seconds, run.labelling_images_per_s = best["labelling_seconds"], best["labelling_images_per_s"]
    digests = {a["output_sha256"] for a in run.attempts}
    run.output_sha256 = digests.pop() if len(digests) == 1 else "differs between attempts"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _same_bytes(runs: list[Run]) -> bool:
    return len({a["output_sha256"] for run in runs for a in run.attempts} or {run.output_sha256 for run in runs}) == 1


def summarise(runs: list[Run]) -> dict:
    """Ratios of the 2-process CPU run to the 1-process ones, and the identity checks: runs
    with the same device and threads per process must write the same bytes whatever the
    number of processes; another number of threads may change the last bits of the floats
    (the order of the sums), so a difference across thread settings is reported, not failed."""
    by_name = {run.name: run for run in runs}
    two = by_name["torchrun-2"]
    ratios = {}
    for one in runs:
        if one.device == "cpu" and one.processes == 1:
            ratios[f"torchrun-2 / {one.name}"] = {
                "images_per_s": two.images_per_s / one.images_per_s,
                "labelling_images_per_s": (two.labelling_images_per_s / one.labelling_images_per_s
                                           if two.labelling_images_per_s and one.labelling_images_per_s else None)}
    outputs = {}
    for device in ("cpu", "cuda"):
        mine = [run for run in runs if run.device == device]
        if not mine:
            continue
        groups = {}
        for threads in sorted({run.threads_per_process for run in mine}):
            same = [run for run in mine if run.threads_per_process == threads]
            groups[str(threads)] = {"runs": [run.name for run in same], "identical": _same_bytes(same)}
        outputs[device] = {"identical": _same_bytes(mine),
                           "identical_per_thread_setting": all(g["identical"] for g in groups.values()),
                           "by_threads_per_process": groups, "sha256": {run.name: run.output_sha256 for run in mine}}
    return {"ratios": ratios, "outputs": outputs}


def print_table(runs: list[Run], summary: dict) -> None:
    print(f"{'run':<16} {'procs x threads':>15} {'torch threads':>13} {'images':>7} {'seconds':>8} {'img/s':>7} "
          f"{'labelling s':>11} {'labelling img/s':>15}")
    for run in runs:
        print(f"{run.name:<16} {f'{run.processes} x {run.threads_per_process}':>15} {run.torch_threads!s:>13} "
              f"{run.images:>7} {run.seconds:8.1f} {run.images_per_s:7.2f} "
              f"{_rate(run.labelling_seconds):>11} {_rate(run.labelling_images_per_s):>15}")
    for name, ratio in summary["ratios"].items():
        print(f"ratio {name}: labelling {_rate(ratio['labelling_images_per_s'])}x, "
              f"whole command {_rate(ratio['images_per_s'])}x")
    for device, check in summary["outputs"].items():
        for threads, group in check["by_threads_per_process"].items():
            print(f"outputs of the {device} runs with {threads} thread(s) per process ({', '.join(group['runs'])}) "
                  f"byte-identical: {'yes' if group['identical'] else 'NO'}")
        print(f"outputs of all {device} runs byte-identical: {'yes' if check['identical'] else 'no'}")


def gpu_count(choice: bool) -> int:
    if not choice:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the folder")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--distinct", type=int, default=256, help="distinct images behind the hard-linked names")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads of a 1-process run; each of N processes gets threads // N")
    parser.add_argument("--workers", type=int, help="label --workers (passed only when label lists the option)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every run; each run keeps its fastest")
    parser.add_argument("--no-gpu", dest="gpu", action="store_false", help="CPU runs only, even with CUDA")
    parser.add_argument("--experiment", type=Path, help="a trained experiment (default: train a tiny one)")
    parser.add_argument("--workdir", type=Path, help="where images and outputs go (default: a temp folder)")
    parser.add_argument("--json-out", type=Path, help="also write machine, date, versions and figures here")
    args = parser.parse_args(argv)
    extra, workers = workers_setting(args.workers)
    runs = plan_runs(args.threads, gpu_count(args.gpu))

    with tempfile.TemporaryDirectory(prefix="label-throughput-") as tmp:
        work = args.workdir or Path(tmp)
        experiment = args.experiment or tiny_experiment(work / "tiny")
        images = make_images(work / f"images_{args.images}_{args.side}", args.images, args.side, args.distinct)
        cache: dict[int, int] = {}
        for round_ in range(args.repeat):  # rounds, so a change of load on the machine hits every run
            for run in runs:
                run.torch_threads = torch_threads(run.threads_per_process, cache)
                output = work / run.name / "labels.json"
                output.parent.mkdir(parents=True, exist_ok=True)
                command = label_command(run, experiment, images, output, args.batch_size, extra)
                attempt = measure(run, command, args.images, output)
                print(f"round {round_ + 1}/{args.repeat} {run.name}: {args.images} images in {attempt['seconds']:.1f} s"
                      f" (labelling {_rate(attempt['labelling_images_per_s'])} img/s)", flush=True)
    for run in runs:
        keep_best(run)
    summary = summarise(runs)
    print_table(runs, summary)
    if args.json_out:
        write_json(args, runs, summary, workers)
    return 0 if all(check["identical_per_thread_setting"] for check in summary["outputs"].values()) else 1


def write_json(args: argparse.Namespace, runs: list[Run], summary: dict, workers: dict) -> None:
    import numpy
    import peft
    import torch
    import transformers

    import teacherkit

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    record = {
        "benchmark": "label_throughput",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "cpus_visible": len(os.sched_getaffinity(0)), "gpus": gpus},
        "versions": {"teacherkit": teacherkit.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__, "numpy": numpy.__version__},
        "settings": {"images": args.images, "side": args.side, "distinct_images": args.distinct,
                     "batch_size": args.batch_size, "threads": args.threads, "workers": workers,
                     "repeat": args.repeat,
                     "thread_variables": ["OMP_NUM_THREADS", "MKL_NUM_THREADS"],
                     "experiment": str(args.experiment) if args.experiment else "tiny random (trained by the bench)"},
        "runs": [asdict(run) for run in runs],
        **summary,
        "measured": {
            "seconds": "wall time of the whole command: start-up, loading the teachers, labelling, merge",
            "labelling_seconds": "from rank 0's shard file appearing (teachers loaded, processes met) to the COCO "
                                 "file appearing (merge done), polled every 10 ms",
            "torch_threads": "torch.get_num_threads() in a fresh interpreter with the run's environment",
            "attempts": "every round of a run; its seconds and rates are those of its fastest attempt",
        },
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
