"""Check that the README's quick start taught both teachers something, on held-out images.

``.ci/run`` runs it after README command 1 (the real quick start: the shipped pretrained tiny
pair, LoRA on domain B, then ``teacherkit evaluate`` on domain B's test split, which training
never saw, with domain A's test split as reference). It reads the ``evaluation.json`` that
``evaluate`` wrote and fails unless, for each teacher, the fine-tuned score on domain B's test
split beats the base by at least ``--min-gain`` and keeps at least ``--min-retention`` of the
base's score on domain A.

The margins come from the three-seed run in ``bench/results/quality-*.json``: the worst seed
gains 0.16 bbox AP / 0.10 mIoU and keeps 92% / 98% (docs/teacher-quality.md); the defaults
leave room for run-to-run noise while still failing a quick start that learns nothing.

    python scripts/check_quickstart.py runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: the headline metric of each teacher the quick start trains
METRICS = {"grounding_dino": "bbox_AP", "sam": "mIoU"}


def check(evaluation: dict, *, min_gain: float, min_retention: float) -> list[str]:
    """The lines to print; a line starting with ``FAIL`` is a failed check."""
    lines = []
    for name, metric in METRICS.items():
        entry = evaluation.get("teachers", {}).get(name)
        if entry is None:
            lines.append(f"FAIL {name}: not evaluated")
            continue
        base, tuned = entry["data"]["base"][metric], entry["data"]["tuned"][metric]
        gain = tuned - base
        verdict = "ok" if gain >= min_gain else "FAIL"
        lines.append(f"{verdict} {name}: {metric} on held-out B {base:.3f} -> {tuned:.3f} (gain {gain:+.3f}, "
                     f"needs >= {min_gain})")
        ref = entry.get("reference")
        if ref is None:
            lines.append(f"FAIL {name}: no --reference scores (retention on domain A)")
            continue
        kept = ref["tuned"][metric] / ref["base"][metric] if ref["base"][metric] else 0.0
        verdict = "ok" if kept >= min_retention else "FAIL"
        lines.append(f"{verdict} {name}: keeps {100 * kept:.0f}% of its domain-A {metric} "
                     f"(needs >= {100 * min_retention:.0f}%)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--min-gain", type=float, default=0.08)
    parser.add_argument("--min-retention", type=float, default=0.85)
    args = parser.parse_args(argv)
    path = args.experiment / "evaluation.json"
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"FAIL {path}: {exc}")
        return 1
    lines = check(evaluation, min_gain=args.min_gain, min_retention=args.min_retention)
    print("\n".join(lines))
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
