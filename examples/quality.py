"""The teacher-quality figures of docs/teacher-quality.md, from one command.

Starting from the shipped pretrained tiny teachers (``examples/pretrained``, trained on
domain A), fine-tune on domain B with teacherkit's trainer at each seed — LoRA with the
quick-start settings (``examples/quickstart.yaml``) and full fine-tuning with the same schedule
and data recipe (the quick start's replay of domain A, see docs/data.md#replay) at each candidate
learning rate — then:

1. **choose on val**: score every run on domain B's *val* split and domain A's *val* split, and
   pick full fine-tuning's learning rate for each teacher by the mean over the seeds (the best
   score on B among the candidates that keep ≥ 90% of the base's score on A);
2. **report on test**: score base, LoRA and the chosen full run once on domain B's and domain A's
   *test* splits (and the LoRA teacher at a few ``--adapter-scale`` values), and write the per-seed
   rows, their mean and min–max, and the targets into ``bench/results/quality-<date>.json``.

    python examples/quality.py                          # seeds 42, 1, 7; full lr 3e-4 or 1e-3
    python examples/quality.py --reuse                  # keep runs already finished in --workdir
    python examples/quality.py --choose-only            # stop after the val choice (test untouched)
    python examples/quality.py --seeds 42 --full-lrs 1e-3 --results runs/one-seed.json
    python examples/quality.py --set training.replay.data=null --results runs/no-replay.json

``scripts/render_results.py`` turns the JSON into the docs' tables. Metrics: Grounding DINO COCO
box mAP (``bbox_AP``), SAM mIoU of box-prompted masks. Targets: LoRA's gain on B ≥ 95% of full
fine-tuning's gain, and LoRA keeps ≥ 90% of the base's score on A — on the mean over the seeds
and at the worst seed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICKSTART = HERE / "quickstart.yaml"
DOMAIN_A, DOMAIN_B = HERE / "domain_a", HERE / "domain_b"
#: the primary metric of each teacher, as the tables show it
METRICS = {"grounding_dino": "bbox_AP", "sam": "mIoU"}
#: overrides of each run on top of examples/quickstart.yaml and --set (base and replay paths are
#: made absolute so the script works from any folder). Only the fine-tuning mode and its learning
#: rate differ: the schedule and the data recipe (replay included) are the same for both runs.
RUNS: dict[str, list[str]] = {
    "lora": [],
    "full": ["teachers.grounding_dino.finetune=full", "teachers.sam.finetune=full", "training.lr=1e-3"],
}
#: full fine-tuning's learning rates scored on val by default: 3e-3 (LoRA's rate) made the detector
#: diverge in the measurements of 2026-11-26, 1e-3 is what the bases were pretrained with
FULL_LRS = "3e-4,1e-3"
TARGET_GAIN, TARGET_RETENTION = 0.95, 0.90
FIGURES = ("base_B", "lora_B", "full_B", "base_A", "lora_A", "full_A", "lora_gain", "full_gain",
           "gain_ratio", "lora_retention", "full_retention")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/quality"), help="experiment folders go here")
    parser.add_argument("--reuse", action="store_true", help="keep runs already finished in --workdir")
    parser.add_argument("--scales", default="0.25,0.5,0.75", help="adapter scales to score the LoRA teacher at")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--seeds", default="42,1,7", help="training seeds, comma-separated")
    parser.add_argument("--choose-seeds", default=None,
                        help="seeds whose val scores choose (default: every seed); the other seeds train "
                        "only the chosen runs")
    parser.add_argument("--full-lrs", default=FULL_LRS,
                        help="full fine-tuning learning rates to choose from on val, comma-separated")
    parser.add_argument("--choose-only", action="store_true",
                        help="train and score on val, record the choice, and stop before the test splits")
    parser.add_argument("--results", type=Path, default=None,
                        help="the JSON to write (default bench/results/quality-<date>.json; "
                        "with --choose-only, <workdir>/choice.json)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. training.replay.fraction=0.25 "
                        "(full fine-tuning keeps its own finetune mode and learning rate)")
    return parser.parse_args(argv)


def _numbers(text: str, what: str, kind: type) -> list[Any]:
    try:
        values = [kind(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: {what} {text}: expected {kind.__name__} values separated by commas") from None
    if not values:
        raise SystemExit(f"error: {what}: give at least one value")
    return values


def _sci(lr: float) -> str:
    """``1e-3`` for 0.001."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def lr_tag(lr: float) -> str:
    """``full-lr1e-3`` for 0.001: the folder and candidate name of a full run."""
    return f"full-lr{_sci(lr)}"


def run_config(host: Any, run: str, seed: int, sets: Sequence[str] = (), lr: float | None = None) -> Any:
    from teacherkit.config import resolve_config

    layered = [f"teachers.grounding_dino.base={HERE / 'pretrained' / 'grounding_dino'}",
               f"teachers.sam.base={HERE / 'pretrained' / 'sam'}", f"training.seed={seed}", *sets, *RUNS[run]]
    if lr is not None:
        layered.append(f"training.lr={lr}")
    config = resolve_config(host.config_model(), config_file=QUICKSTART, sets=layered)
    replay = config.training.replay
    # the quick start's paths are relative to the repository root
    for key in ("data", "images"):
        value = getattr(replay, key)
        if value and not Path(value).is_absolute():
            setattr(replay, key, str(ROOT / value))
    return config


def recipe(config: Any) -> dict[str, Any]:
    """What every run must share for the gain ratio to compare like with like."""
    training = config.training
    return {"epochs": training.epochs, "batch_size": training.batch_size, "warmup_ratio": training.warmup_ratio,
            "replay": training.replay.model_dump(), "augmentation": config.augmentation.model_dump(),
            "per_teacher": {name: [config.teacher(name).epochs, config.teacher(name).batch_size] for name in METRICS}}


def candidates(lrs: Sequence[float]) -> dict[str, tuple[str, float | None]]:
    """Folder name -> (run, learning rate): the LoRA run and one full run per learning rate."""
    return {"lora": ("lora", None), **{lr_tag(lr): ("full", lr) for lr in lrs}}


def finished(folder: Path) -> bool:
    meta = folder / "metadata.json"
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "finished"


def train(host: Any, config: Any, folder: Path, reuse: bool, models: list[str] | None = None) -> float | None:
    """Train one run (``models``: only these teachers) unless ``reuse`` finds it finished; returns
    its training seconds."""
    from teacherkit.training.trainer import TeacherTrainer

    if not (reuse and finished(folder)):
        TeacherTrainer(DOMAIN_B / "train.json", DOMAIN_B / "val.json", output_dir=folder, config=config,
                       overwrite=True, quiet=True, host=host, models=models).train()
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    return meta.get("seconds_this_run")


def splits(split: str) -> dict[str, tuple[Any, Path]]:
    from teacherkit.data.coco import load_coco

    return {"B": (load_coco(DOMAIN_B / f"{split}.json"), DOMAIN_B),
            "A": (load_coco(DOMAIN_A / f"{split}.json"), DOMAIN_A)}


def score(loaded: Any, name: str, sets: dict[str, tuple[Any, Path]], info: Any) -> dict[str, float]:
    from teacherkit.evaluation.run import metrics_for, predictions_for

    out = {}
    for key, (coco, folder) in sets.items():
        preds = predictions_for(loaded, coco, folder, info)
        out[key] = float(metrics_for(loaded.spec.evaluation, coco.to_dict(), preds)[METRICS[name]])
    return out


def stats(values: Sequence[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(known) / len(known), "min": min(known), "max": max(known)}


def score_val(host: Any, workdir: Path, seeds: Sequence[int], names: Sequence[str]) -> list[dict[str, Any]]:
    """Every candidate (and the base, once) on domain B's and domain A's val splits."""
    from teacherkit.inference.experiment import Experiment

    val = splits("val")
    first = Experiment(workdir / f"seed{seeds[0]}" / "lora", host=host)
    base = {name: score(first.teacher(name, adapter=False), name, val, first.info) for name in METRICS}
    rows = [{"seed": None, "teacher": name, "candidate": "base", **base[name], "retention": 1.0} for name in METRICS]
    for seed in seeds:
        for candidate in names:
            exp = Experiment(workdir / f"seed{seed}" / candidate, host=host)
            for name in METRICS:
                got = score(exp.teacher(name), name, val, exp.info)
                rows.append({"seed": seed, "teacher": name, "candidate": candidate, **got,
                             "retention": got["A"] / base[name]["A"] if base[name]["A"] > 0 else None})
    return rows


def choose(rows: list[dict[str, Any]], lrs: Sequence[float]) -> dict[str, Any]:
    """Full fine-tuning's learning rate per teacher, from the val rows alone."""
    summary: dict[str, Any] = {}
    chosen: dict[str, str] = {}
    for name in METRICS:
        mine = [r for r in rows if r["teacher"] == name]
        summary[name] = {c: {"B": stats([r["B"] for r in mine if r["candidate"] == c]),
                             "retention": stats([r["retention"] for r in mine if r["candidate"] == c])}
                         for c in dict.fromkeys(r["candidate"] for r in mine)}
        full = [lr_tag(lr) for lr in lrs]
        keeps = [c for c in full if (summary[name][c]["retention"]["mean"] or 0) >= TARGET_RETENTION]
        chosen[name] = max(keeps or full, key=lambda c: summary[name][c]["B"]["mean"])
    return {"lever": "Full fine-tuning's learning rate (" + ", ".join(map(_sci, lrs)) + ")",
            "rule": f"the best mean score on B among the candidates whose mean retention on A is ≥ "
            f"{TARGET_RETENTION:.0%} (the best on B when none is).",
            "summary": summary, "chosen": chosen, "per_seed": rows}


def seed_rows(host: Any, folder: Path, seed: int, chosen: dict[str, str], scales: Sequence[float],
              base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One seed's test figures per teacher: the base (scored once, passed in), LoRA and the chosen full run."""
    from teacherkit.inference.experiment import Experiment

    test = splits("test")
    lora = Experiment(folder / "lora", host=host)
    rows = []
    for name in METRICS:
        full = Experiment(folder / chosen[name], host=host)
        row: dict[str, Any] = {"seed": seed, "teacher": name, "full_lr": float(chosen[name].split("lr")[1])}
        for key, got in (("base", base[name]), ("lora", score(lora.teacher(name), name, test, lora.info)),
                         ("full", score(full.teacher(name), name, test, full.info))):
            row[f"{key}_B"], row[f"{key}_A"] = got["B"], got["A"]
        row["scales"] = {f"{s:g}": score(lora.teacher(name, adapter_scale=s), name, test, lora.info) for s in scales}
        rows.append(with_ratios(row))
    return rows


def score_test(host: Any, workdir: Path, seeds: Sequence[int], chosen: dict[str, str],
               scales: Sequence[float]) -> list[dict[str, Any]]:
    """The test splits, once: the base (the same model at every seed) and each seed's chosen runs."""
    from teacherkit.inference.experiment import Experiment

    exp = Experiment(workdir / f"seed{seeds[0]}" / "lora", host=host)
    base = {name: score(exp.teacher(name, adapter=False), name, splits("test"), exp.info) for name in METRICS}
    return [r for seed in seeds for r in seed_rows(host, workdir / f"seed{seed}", seed, chosen, scales, base)]


def with_ratios(row: dict[str, Any]) -> dict[str, Any]:
    """Gains on B, LoRA gain ÷ full gain (None when full does not gain) and retention on A."""
    row["lora_gain"], row["full_gain"] = row["lora_B"] - row["base_B"], row["full_B"] - row["base_B"]
    row["gain_ratio"] = row["lora_gain"] / row["full_gain"] if row["full_gain"] > 0 else None
    for key in ("lora", "full"):
        row[f"{key}_retention"] = row[f"{key}_A"] / row["base_A"] if row["base_A"] > 0 else None
    return row


def aggregate(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and min–max of every figure per teacher, and the targets on the mean and the worst seed."""
    aggregates, checks = {}, {}
    for name in METRICS:
        mine = [r for r in rows if r["teacher"] == name]
        agg = {key: stats([r[key] for r in mine]) for key in FIGURES}
        # a seed meets the gain target when LoRA gains ≥ 95% of what full gains (any sign of full's gain)
        gain_ok = [r["lora_gain"] >= TARGET_GAIN * r["full_gain"] for r in mine]
        full_mean = agg["full_gain"]["mean"]
        worst_gain = min(mine, key=lambda r: r["lora_gain"] - TARGET_GAIN * r["full_gain"])
        worst_keep = min(mine, key=lambda r: r["lora_retention"] or 0)
        checks[name] = {
            "gain": {"mean": agg["lora_gain"]["mean"] / full_mean if full_mean > 0 else None,
                     "mean_ok": agg["lora_gain"]["mean"] >= TARGET_GAIN * full_mean,
                     "worst": worst_gain["gain_ratio"], "worst_seed": worst_gain["seed"], "worst_ok": all(gain_ok)},
            "retention": {"mean": agg["lora_retention"]["mean"],
                          "mean_ok": (agg["lora_retention"]["mean"] or 0) >= TARGET_RETENTION,
                          "worst": worst_keep["lora_retention"], "worst_seed": worst_keep["seed"],
                          "worst_ok": (worst_keep["lora_retention"] or 0) >= TARGET_RETENTION}}
        aggregates[name] = agg
    return aggregates, checks


def provenance(argv: Sequence[str] | None, threads: int) -> dict[str, Any]:
    """Machine, date, versions and the exact command, for the results file."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "teacherkit"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    args = sys.argv[1:] if argv is None else list(argv)
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count(), "torch_threads": threads},
            "versions": versions, "command": shlex.join(["python", "examples/quality.py", *args])}


def train_all(host: Any, args: argparse.Namespace, seeds: Sequence[int],
              runs: dict[str, tuple[str, float | None]]) -> dict[str, float | None]:
    """Every candidate at every seed; returns each candidate's mean training seconds."""
    spent: dict[str, list[float]] = {c: [] for c in runs}
    for seed in seeds:
        for candidate, (run, lr) in runs.items():
            config = run_config(host, run, seed, args.sets, lr)
            took = train(host, config, args.workdir / f"seed{seed}" / candidate, args.reuse)
            if took is not None:
                spent[candidate].append(took)
    return {c: round(sum(v) / len(v), 1) if v else None for c, v in spent.items()}


def report(data: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    import render_results

    parts = [render_results.render_choice(data)]
    if "aggregates" in data:
        parts += [render_results.render_quality(data), render_results.render_targets(data),
                  render_results.render_seeds(data), render_results.render_scales(data)]
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from teacherkit.atomic import atomic_write_json
    from teacherkit.plugins import get_plugin_manager

    if args.threads:
        torch.set_num_threads(args.threads)
    scales = _numbers(args.scales, "--scales", float) if args.scales.strip() else []
    if any(not 0 < s < 1 for s in scales):
        raise SystemExit(f"error: --scales {args.scales}: each scale must be between 0 and 1 (exclusive)")
    seeds, lrs = _numbers(args.seeds, "--seeds", int), _numbers(args.full_lrs, "--full-lrs", float)
    host = get_plugin_manager()
    runs = candidates(lrs)
    recipes = {c: recipe(run_config(host, run, seeds[0], args.sets, lr)) for c, (run, lr) in runs.items()}
    if any(r != recipes["lora"] for r in recipes.values()):
        raise SystemExit(f"error: the runs must share schedule and data recipe, got {recipes}")
    started = time.time()
    data: dict[str, Any] = {"kind": "quality", **provenance(argv, args.threads), "seeds": seeds,
                            "metrics": METRICS, "targets": {"gain": TARGET_GAIN, "retention": TARGET_RETENTION},
                            "recipe": recipes["lora"], "sets": args.sets}
    choosing = _numbers(args.choose_seeds, "--choose-seeds", int) if args.choose_seeds else seeds
    if not set(choosing) <= set(seeds):
        raise SystemExit(f"error: --choose-seeds {args.choose_seeds}: each must be one of --seeds {args.seeds}")
    data["choose_seeds"] = choosing
    data["training_seconds"] = train_all(host, args, choosing, runs)
    data["choice"] = choose(score_val(host, args.workdir, choosing, list(runs)), lrs)
    if not args.choose_only:
        rest = [s for s in seeds if s not in choosing]
        kept = {c: runs[c] for c in ["lora", *dict.fromkeys(data["choice"]["chosen"].values())]}
        for candidate, took in train_all(host, args, rest, kept).items():
            # the mean training seconds of each candidate over every seed it trained at
            before, n_before = data["training_seconds"][candidate], len(choosing)
            if took is not None and before is not None:
                took = round((before * n_before + took * len(rest)) / (n_before + len(rest)), 1)
            data["training_seconds"][candidate] = took if took is not None else before
        data["per_seed"] = score_test(host, args.workdir, seeds, data["choice"]["chosen"], scales)
        data["aggregates"], data["checks"] = aggregate(data["per_seed"])
    data["total_seconds"] = round(time.time() - started, 1)
    day = data["date"][:10]
    # a val-only choice has no test figures: it stays out of bench/results, which the docs render from
    default = args.workdir / "choice.json" if args.choose_only else ROOT / "bench" / "results" / f"quality-{day}.json"
    out = args.results or default
    atomic_write_json(out, data, indent=2)
    print(report(data))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
