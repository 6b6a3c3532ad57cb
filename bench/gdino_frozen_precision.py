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

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sam_views  # training, scoring and the summary, shared
from sam_views import quality

#: the variants: frozen_precision's values
PRECISIONS = ("autocast", "bf16")


def main(argv: Sequence[str] | None = None) -> int:
    args = sam_views.parser_for(__doc__).parse_args(argv)
    seeds = quality._numbers(args.seeds, "--seeds", int)
    variants = {p: {"sets": ["teachers.grounding_dino.lora.target_modules=null",
                             f"teachers.grounding_dino.frozen_precision={p}"]} for p in PRECISIONS}
    sam_views.run_variants(args, argv, kind="gdino_frozen_precision", script="bench/gdino_frozen_precision.py",
                           teacher="grounding_dino", metric="bbox AP", variants=variants, seeds=seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
