"""What ``teachers.grounding_dino.frozen_precision: bf16`` does to a teacher's quality.

The option stores the frozen image backbone, text encoder and encoder in bf16 and runs them
without autocast (1.77× the plain loop on an H200 against 1.57× without it, docs/performance.md),
so the features the decoder learns from are rounded differently. This trains Grounding DINO alone
from the shipped pretrained tiny teacher on domain B with the quick start's settings (its replay of
domain A included) but LoRA on the decoder only (the default targets, so the backbone, text encoder
and encoder stay frozen and the option applies to them), once per seed with ``frozen_precision``
``autocast`` (the default) and ``bf16``, and scores each run once on domain B's and domain A's
*test* splits (COCO box mAP).

On a CPU there is no autocast (``mixed_precision: auto`` is off there), so the default computes
the frozen parts in float32 and the comparison is float32 against bf16 features: a larger change
than on a GPU, where autocast already runs their matrix products in bf16.

    python bench/gdino_frozen_precision.py --workdir /tmp/gdino-fp \
        --json-out bench/results/gdino_frozen_precision-DATE.json

Nothing is chosen from these scores: the variants are fixed beforehand, and the test splits are
read once per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sam_views  # training, scoring and the summary, shared
from sam_views import quality

#: the variants: frozen_precision's values
PRECISIONS = ("autocast", "bf16")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="experiment folders go here")
    parser.add_argument("--seeds", default="42,1,7", help="training seeds, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--reuse", action="store_true", help="keep runs already finished in --workdir")
    parser.add_argument("--json-out", type=Path, default=None, help="write machine, command and figures here")
    args = parser.parse_args(argv)
    seeds = quality._numbers(args.seeds, "--seeds", int)
    import torch

    from teacherkit.plugins import get_plugin_manager

    torch.set_num_threads(args.threads)
    host = get_plugin_manager()
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        for precision in PRECISIONS:
            sets = ["teachers.grounding_dino.lora.target_modules=null",
                    f"teachers.grounding_dino.frozen_precision={precision}"]
            folder = args.workdir / f"seed{seed}" / precision
            row = sam_views.train_and_score(host, folder, "grounding_dino", seed, sets, args.reuse)
            rows.append({**row, "variant": precision})
            print(f"seed {seed} {precision:8s} bbox AP B {row['B']:.3f} A {row['A']:.3f} "
                  f"train {row['train_seconds']:.1f}s", flush=True)
    base = sam_views.base_scores(host, args.workdir / f"seed{seeds[0]}" / PRECISIONS[0], "grounding_dino")
    summary = sam_views.summarise(rows)
    print(f"base      bbox AP B {base['B']:.3f} A {base['A']:.3f}")
    for variant, s in summary.items():
        print(f"{variant:9s} bbox AP B {s['B']['mean']:.3f} ({s['B']['min']:.3f}-{s['B']['max']:.3f}) "
              f"A {s['A']['mean']:.3f} ({s['A']['min']:.3f}-{s['A']['max']:.3f}) "
              f"train {s['train_seconds']['mean']:.1f}s")
    if args.json_out:
        sam_views.write_record(args.json_out, "gdino_frozen_precision", "bench/gdino_frozen_precision.py", argv,
                               args.threads, {"seeds": seeds, "base": base, "rows": rows, "summary": summary,
                                              "total_seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
