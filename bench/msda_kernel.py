"""Grounding DINO's encoder deformable attention: transformers' implementation next to the
plugin's Triton kernel (``teacherkit_dino.msda``), same inputs, one run.

    python bench/msda_kernel.py --size full     # one CUDA GPU: time, peak memory, max difference
    python bench/msda_kernel.py --size tiny     # no GPU: Triton's CPU interpreter (correctness only)

``full`` is one encoder layer of Grounding DINO-T at batch 8 and 800x1333: four feature levels
(100x167, 50x84, 25x42, 13x21), every position a query (22,223 per image), 8 heads of 32 channels,
4 points per level; values in bf16 (the value projection under autocast), locations and weights
in float32. Prints ms per call, peak memory above the inputs, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SIZES = {
    "tiny": {"batch": 2, "shapes": [(10, 14), (5, 7), (3, 4), (2, 2)], "heads": 2, "dim": 8, "points": 2},
    "full": {"batch": 8, "shapes": [(100, 167), (50, 84), (25, 42), (13, 21)], "heads": 8, "dim": 32, "points": 4},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        if args.size != "tiny":
            print("--size full needs a CUDA GPU", file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel is defined
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    from teacherkit_dino.msda import msda_forward, triton_available

    if not triton_available():
        print("the kernel needs the triton package", file=sys.stderr)
        return 2
    cfg = SIZES[args.size]
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    shapes = cfg["shapes"]
    batch, heads, dim, points, levels = cfg["batch"], cfg["heads"], cfg["dim"], cfg["points"], len(shapes)
    keys = sum(h * w for h, w in shapes)
    starts = torch.tensor([sum(h * w for h, w in shapes[:i]) for i in range(levels)], device=device)
    spatial = torch.tensor(shapes, device=device)
    value_dtype = torch.bfloat16 if cuda else torch.float32
    value = torch.randn(batch, keys, heads, dim, device=device).to(value_dtype)
    loc = torch.rand(batch, keys, heads, levels, points, 2, device=device)
    attn = torch.softmax(torch.randn(batch, keys, heads, levels * points, device=device), -1)
    attn = attn.view(batch, keys, heads, levels, points)
    reference = MultiScaleDeformableAttention()

    def transformers_call() -> torch.Tensor:
        # as under autocast: grid_sample and the weighted sum run in float32
        return reference(value.float(), spatial, shapes, starts, loc, attn, 64)

    def kernel_call() -> torch.Tensor:
        return msda_forward(value, shapes, starts, loc, attn)

    rows = {}
    with torch.no_grad():
        expected = transformers_call()
        got = kernel_call()
        diff = float((expected - got.float()).abs().max())
        for name, call in (("transformers", transformers_call), ("kernel", kernel_call)):
            call()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            repeats = args.repeats if cuda else 1
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            if cuda:
                torch.cuda.synchronize()
            ms = (time.perf_counter() - start) / repeats * 1e3
            peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else None
            rows[name] = {"ms": ms, "peak_gib_above_inputs": peak}
            mem = f"{peak:6.2f} GiB" if peak is not None else "n/a"
            print(f"{name:14s} {ms:9.2f} ms/call  peak {mem}", flush=True)
    card = torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)"
    speed = rows["transformers"]["ms"] / rows["kernel"]["ms"]
    print(f"# msda size={args.size} device={card} queries={batch}x{keys} max_abs_diff={diff:.2e} "
          f"date={time.strftime('%Y-%m-%d')}")
    print(f"ratio kernel vs transformers: speed {speed:.2f}x")
    if args.json:  # with the machine, versions and exact command every results file carries
        sys.path.insert(0, str(Path(__file__).parent))
        from train_throughput import run_record

        record = {"kind": "msda_kernel", **run_record("bench/msda_kernel.py", argv), "size": args.size,
                  "card": card, "max_abs_diff": diff, "rows": rows, "speed_ratio": speed}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    tolerance = 5e-2 if cuda else 1e-5  # bf16 values on the GPU
    return 0 if diff <= tolerance * max(1.0, float(expected.abs().max())) else 1


if __name__ == "__main__":
    sys.exit(main())
