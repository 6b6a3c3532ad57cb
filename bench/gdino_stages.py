"""Where teacherkit's Grounding DINO LoRA training step spends its time: per phase, per
part of the forward, GPU work against host work, and what capturing the frozen parts in
CUDA graphs would save.

    python bench/gdino_stages.py --size tiny                 # CPU, seconds (CI smoke)
    python bench/gdino_stages.py --size full --graphs --json out.json   # one CUDA GPU, ~1 min

The model, batches and step are ``bench/train_throughput.py``'s ``gdino_lora`` teacherkit
variant (random weights, LoRA on the decoder, batch 8 at 800x1333 for ``full``). Reported:

- ``step_ms``: wall milliseconds per step, and ``phases_ms``: forward / loss / host read of
  the losses / backward / clipping + AdamW, timed with CUDA events on the GPU stream (so a
  phase whose kernels were queued faster than they ran shows the GPU's time, and one the
  host could not queue fast enough shows the host's).
- ``forward_ms``: the text encoder, image backbone, encoder and decoder inside the forward
  (events from forward hooks on ``model.model``'s parts).
- ``profile``: from torch.profiler over two steps: GPU kernel milliseconds per step (the
  GPU's busy time), host milliseconds in PyTorch operators, kernel launches and host waits
  (``cudaStreamSynchronize``) per step, the top operators by GPU time.
- ``graphs`` (``--graphs``, CUDA only): each frozen part run alone, in evaluation mode (no
  dropout, so outputs compare exactly), eager next to one CUDA-graph replay of it: the
  milliseconds of each, the memory the graph keeps, the largest difference, or why the
  capture failed. A part whose replay is much faster than eager is host-bound.

On the CPU the phases are wall-clock (the CPU runs the work as it is asked for), the
profile counts host time only, and graphs are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput as tt

PARTS = ("text_backbone", "backbone", "encoder", "decoder")
PHASES = ("forward", "loss", "host_read", "backward", "optimizer")


class Clock:
    """Marks on the GPU stream (CUDA events) or the wall clock (CPU)."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.torch, self.cuda = torch, cuda

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1000.0


def build(size_name: str, dev: tt.Device) -> tuple[Any, Any, Any, list[dict[str, Any]]]:
    """The teacherkit variant of train_throughput's gdino_lora: teacher, model, loss, batches."""
    from teacherkit.plugins import get_plugin_manager
    from teacherkit_dino.teacher import GroundingDinoTeacher

    size = tt.SIZES[size_name]
    host = tt.ensure_plugins(get_plugin_manager())
    spec = host.teacher("grounding_dino")
    cfg, base = tt.gdino_base(size_name, size)
    teacher = GroundingDinoTeacher(spec, cfg, tt.dataset_info(), base)
    teacher.model.to(dev.device).train()
    loss_fn = host.make_loss(spec, cfg, teacher)
    pre = host.make_preprocessor(spec, cfg, teacher)
    height, width = (600, 1000) if size_name == "full" else (72, 96)
    samples = tt.synthetic_samples(size.batch * 3, height, width, size.objects, seed=1)
    return teacher, teacher.model, loss_fn, tt.batches(pre, samples, size.batch, dev)


def make_step(teacher: Any, model: Any, loss_fn: Any, dev: tt.Device, clock: Clock,
              marks: list[tuple[Any, ...]]) -> Any:
    """train_throughput's teacherkit step, with a mark between its phases."""
    import torch

    from teacherkit.training.loop import _param_groups

    optimizer = torch.optim.AdamW(_param_groups(model, 1e-4), lr=1e-4, fused=dev.cuda)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: dict[str, Any]) -> None:
        m0 = clock.mark()
        with dev.autocast():
            out = teacher.forward(model, batch)
            m1 = clock.mark()
            losses = loss_fn(out, batch)
        m2 = clock.mark()
        loss = losses["loss"]
        torch.stack([torch.isfinite(loss.detach()).float(), *(v.detach().float() for v in losses.values())]).tolist()
        m3 = clock.mark()
        loss.backward()
        m4 = clock.mark()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append((m0, m1, m2, m3, m4, clock.mark()))

    return step


def part_hooks(model: Any, clock: Clock, spans: dict[str, list[tuple[Any, Any]]]) -> list[Any]:
    hooks = []
    for name in PARTS:
        part = getattr(model.model, name)
        opened: dict[str, Any] = {}

        def before(_m: Any, _a: Any, opened: dict[str, Any] = opened) -> None:
            opened["start"] = clock.mark()

        def after(_m: Any, _a: Any, _o: Any, name: str = name, opened: dict[str, Any] = opened) -> None:
            spans.setdefault(name, []).append((opened["start"], clock.mark()))

        hooks += [part.register_forward_pre_hook(before), part.register_forward_hook(after)]
    return hooks


def profile_summary(step: Any, batch: dict[str, Any], dev: tt.Device, rows: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.cuda else [])
    steps = 2
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(batch)
        dev.sync()
    from torch.autograd import DeviceType

    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]  # operators' rows repeat their kernels' time
    operators = [e for e in events if e.device_type == DeviceType.CPU]
    launches = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
    summary = {
        "host_op_ms_per_step": sum(e.self_cpu_time_total for e in operators
                                   if e.key.startswith("aten::")) / 1000 / steps,
        "gpu_kernel_ms_per_step": sum(e.self_device_time_total for e in kernels) / 1000 / steps if dev.cuda else None,
        "kernel_launches_per_step": sum(e.count for e in events if e.key in launches) / steps,
        "host_waits_per_step": sum(e.count for e in events if e.key in ("cudaStreamSynchronize",
                                                                         "cudaDeviceSynchronize")) / steps,
    }
    key = "self_device_time_total" if dev.cuda else "self_cpu_time_total"
    top = sorted((e for e in operators if e.key.startswith("aten::") and getattr(e, key) > 0),
                 key=lambda e: getattr(e, key), reverse=True)[:rows]
    summary["top_ops"] = [{"op": e.key[:80], "ms_per_step": round(getattr(e, key) / 1000 / steps, 3),
                           "calls_per_step": e.count / steps} for e in top]
    return summary


def _tensors(tree: Any) -> list[Any]:
    import torch

    if torch.is_tensor(tree):
        return [tree]
    if hasattr(tree, "to_tuple"):
        tree = tree.to_tuple()
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def graph_probe(part: Any, args: tuple, kwargs: dict[str, Any], dev: tt.Device, reps: int = 10) -> dict[str, Any]:
    """``part`` alone in eval mode under no_grad and autocast: eager ms next to graph replay ms."""
    import torch

    from teacherkit_dino import msda

    result: dict[str, Any] = {}
    was_training = part.training
    part.eval()

    def run() -> Any:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), \
                msda.shape_checks_off():
            return part(*args, **kwargs)

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(side)
        dev.sync()
        start = time.perf_counter()
        for _ in range(reps):
            eager = run()
        dev.sync()
        result["eager_ms"] = (time.perf_counter() - start) * 1000 / reps
        before = torch.cuda.memory_allocated()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = run()
        result["graph_mib"] = (torch.cuda.memory_allocated() - before) / 2**20
        dev.sync()
        start = time.perf_counter()
        for _ in range(reps):
            graph.replay()
        dev.sync()
        result["replay_ms"] = (time.perf_counter() - start) * 1000 / reps
        pairs = [(a, b) for a, b in zip(_tensors(eager), _tensors(static)) if a.is_floating_point()]
        result["max_abs_diff"] = max((float((a.float() - b.float()).abs().max()) for a, b in pairs), default=None)
    except Exception as exc:  # a part that cannot be captured is a finding, not a failure
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc(limit=3, file=sys.stderr)
    finally:
        part.train(was_training)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(tt.SIZES), default="tiny")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default by size)")
    parser.add_argument("--graphs", action="store_true", help="also try CUDA graphs of the frozen parts (CUDA)")
    parser.add_argument("--top", type=int, default=12, help="operators listed in the profile summary")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = tt.Device(device, amp=device.startswith("cuda"))
    clock = Clock(dev.cuda)
    size = tt.SIZES[args.size]
    steps = args.steps or size.steps
    teacher, model, loss_fn, data = build(args.size, dev)
    marks: list[tuple[Any, ...]] = []
    spans: dict[str, list[tuple[Any, Any]]] = {}
    step = make_step(teacher, model, loss_fn, dev, clock, marks)
    for _ in range(size.warmup):
        step(data[0])
    hooks = part_hooks(teacher.hf_model, clock, spans)
    dev.sync()
    marks.clear()
    dev.reset_peak()
    start = time.perf_counter()
    for i in range(steps):
        step(data[1 + i % (len(data) - 1)])
    dev.sync()
    wall_ms = (time.perf_counter() - start) * 1000 / steps
    for hook in hooks:
        hook.remove()
    record: dict[str, Any] = {
        "kind": "gdino_stages", **tt.run_record("bench/gdino_stages.py", argv), "size": args.size,
        "device": device, "batch": size.batch, "steps": steps, "amp": dev.amp,
        "step_ms": wall_ms, "img_per_s": size.batch * 1000 / wall_ms, "peak_gib": dev.peak_gib(),
        "phases_ms": {name: sum(clock.ms(m[i], m[i + 1]) for m in marks) / len(marks)
                      for i, name in enumerate(PHASES)},
        "forward_ms": {name: sum(clock.ms(a, b) for a, b in spans[name]) / len(spans[name]) for name in PARTS},
    }
    record["profile"] = profile_summary(step, data[1], dev, args.top)
    if args.graphs and dev.cuda:
        captured: dict[str, tuple[tuple, dict[str, Any]]] = {}
        grabs = [getattr(teacher.hf_model.model, name).register_forward_pre_hook(
            lambda _m, a, k, name=name: captured.setdefault(name, (a, k)), with_kwargs=True)
            for name in PARTS[:3]]
        with torch.no_grad(), dev.autocast():
            teacher.forward(model, data[1])
        for grab in grabs:
            grab.remove()
        record["graphs"] = {name: graph_probe(getattr(teacher.hf_model.model, name), *captured[name], dev)
                            for name in PARTS[:3]}
    print(f"# gdino_stages size={args.size} device={device} batch={size.batch} steps={steps}")
    print(f"step {wall_ms:.1f} ms ({record['img_per_s']:.1f} img/s)")
    print("phases ms: " + ", ".join(f"{k} {v:.1f}" for k, v in record["phases_ms"].items()))
    print("forward ms: " + ", ".join(f"{k} {v:.1f}" for k, v in record["forward_ms"].items()))
    prof = record["profile"]
    gpu = "n/a" if prof["gpu_kernel_ms_per_step"] is None else f"{prof['gpu_kernel_ms_per_step']:.1f}"
    print(f"per step: GPU kernels {gpu} ms, host in operators {prof['host_op_ms_per_step']:.1f} ms, "
          f"{prof['kernel_launches_per_step']:.0f} launches, {prof['host_waits_per_step']:.0f} host waits")
    for name, row in record.get("graphs", {}).items():
        print(f"graph {name}: {row}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
