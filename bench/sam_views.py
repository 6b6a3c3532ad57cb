"""What SAM's cached augmentation views cost in quality, and what they save in time.

With a frozen image encoder the embedding cache only hits when an encoder input repeats, so a
cached teacher augments each image with ``cache_views`` (K) fixed views, epoch ``e`` repeating
the view of epoch ``e mod K`` (docs/teachers/sam.md). The alternative is a fresh view every
epoch (``cache_views: 0``), which never hits. This trains SAM alone, from the shipped pretrained
tiny teacher on domain B with the quick start's settings (``examples/quickstart.yaml``, its
replay of domain A included) and ``mode: frozen_encoder``, once per seed and variant, and scores
each run once on domain B's and domain A's *test* splits (mIoU of box-prompted masks), next to
the base's score. Training seconds come from each run's metadata (this machine's wall clock).

    python bench/sam_views.py --workdir /tmp/sam-views --json-out bench/results/sam_views-DATE.json
    python bench/sam_views.py --seeds 42 --views 0,2 --workdir /tmp/sam-views   # one seed

Nothing is chosen from these scores: the variants are fixed beforehand, and the test splits are
read once per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import quality  # noqa: E402  (examples/quality.py: the quick start's runs and scoring)


def variant_name(views: int) -> str:
    return "fresh" if views == 0 else f"views{views}"


def train_and_score(host: Any, folder: Path, teacher: str, seed: int, sets: Sequence[str],
                    reuse: bool) -> dict[str, Any]:
    """Train ``teacher`` alone from its shipped pretrained tiny base on domain B with the quick
    start's settings and ``sets`` at ``seed`` (unless ``reuse`` finds the run finished); its
    primary metric on both domains' test splits and its training seconds."""
    from teacherkit.inference.experiment import Experiment

    seconds = quality.train(host, quality.run_config(host, "lora", seed, list(sets)), folder, reuse, [teacher])
    exp = Experiment(folder, host=host)
    got = quality.score(exp.teacher(teacher), teacher, quality.splits("test"), exp.info)
    return {"seed": seed, "B": got["B"], "A": got["A"], "train_seconds": seconds}


def base_scores(host: Any, folder: Path, teacher: str) -> dict[str, float]:
    """The untouched base on the test splits (the same model whatever the seed), from any run."""
    from teacherkit.inference.experiment import Experiment

    exp = Experiment(folder, host=host)
    return quality.score(exp.teacher(teacher, adapter=False), teacher, quality.splits("test"), exp.info)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and min–max of each figure per variant."""
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        out[variant] = {key: quality.stats([r[key] for r in mine]) for key in ("B", "A", "train_seconds")}
    return out


def write_record(path: Path, kind: str, script: str, argv: Sequence[str] | None, threads: int,
                 figures: dict[str, Any]) -> None:
    """The results file: machine, date, versions and the exact command (``script`` and its
    arguments), then ``figures``; written atomically."""
    from teacherkit.atomic import atomic_write_bytes

    record = quality.provenance(argv, threads)
    record["command"] = record["command"].replace("examples/quality.py", script)
    record.update({"kind": kind, **figures})
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())


def parser_for(doc: str) -> argparse.ArgumentParser:
    """The options every variant bench shares."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="experiment folders go here")
    parser.add_argument("--seeds", default="42,1,7", help="training seeds, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--reuse", action="store_true", help="keep runs already finished in --workdir")
    parser.add_argument("--json-out", type=Path, default=None, help="write machine, command and figures here")
    return parser


def run_variants(args: argparse.Namespace, argv: Sequence[str] | None, *, kind: str, script: str, teacher: str,
                 metric: str, variants: dict[str, dict[str, Any]], seeds: Sequence[int]) -> None:
    """Train ``teacher`` in each variant (``{"sets": [...], **what its rows record}``) at each seed
    into ``--workdir/seed<N>/<variant>``, score each run once on the test splits, print the runs
    and the summary, and write the results file when ``--json-out`` asks."""
    import torch

    from teacherkit.plugins import get_plugin_manager

    torch.set_num_threads(args.threads)
    host = get_plugin_manager()
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        for name, variant in variants.items():
            row = train_and_score(host, args.workdir / f"seed{seed}" / name, teacher, seed, variant["sets"],
                                  args.reuse)
            rows.append({**row, "variant": name, **{k: v for k, v in variant.items() if k != "sets"}})
            print(f"seed {seed} {name:9s} {metric} B {row['B']:.3f} A {row['A']:.3f} "
                  f"train {row['train_seconds']:.1f}s", flush=True)
    base = base_scores(host, args.workdir / f"seed{seeds[0]}" / next(iter(variants)), teacher)
    summary = summarise(rows)
    print(f"{'base':9s} {metric} B {base['B']:.3f} A {base['A']:.3f}")
    for name, got in summary.items():
        print(f"{name:9s} {metric} B {got['B']['mean']:.3f} ({got['B']['min']:.3f}-{got['B']['max']:.3f}) "
              f"A {got['A']['mean']:.3f} ({got['A']['min']:.3f}-{got['A']['max']:.3f}) "
              f"train {got['train_seconds']['mean']:.1f}s")
    if args.json_out:
        write_record(args.json_out, kind, script, argv, args.threads,
                     {"seeds": list(seeds), "base": base, "rows": rows, "summary": summary,
                      "total_seconds": round(time.perf_counter() - started, 1)})


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--views", default="0,2", help="cache_views values to compare (0: a fresh view every epoch)")
    args = parser.parse_args(argv)
    seeds = quality._numbers(args.seeds, "--seeds", int)
    views = quality._numbers(args.views, "--views", int)
    variants = {variant_name(k): {"sets": ["teachers.sam.mode=frozen_encoder", f"teachers.sam.cache_views={k}"],
                                  "views": k} for k in views}
    run_variants(args, argv, kind="sam_views", script="bench/sam_views.py", teacher="sam", metric="mIoU",
                 variants=variants, seeds=seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
