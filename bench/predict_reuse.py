"""How much ``load_experiment(...).predict`` saves by keeping its teachers: the seconds of
the first call (which loads both teachers) next to the second (which reuses them), on
the same images, and their ratio.

    python bench/predict_reuse.py                      # trains 1 epoch on the shipped pair, then measures
    python bench/predict_reuse.py runs/quickstart      # an experiment you have
    python bench/predict_reuse.py --train-images 4 --images 2 --threads 1 --json out.json

Without an experiment folder the bench makes one: the shipped pretrained tiny pair
(examples/pretrained) LoRA-tuned for one epoch on domain B (examples/quickstart.yaml
without replay), in a temporary folder (or ``--workdir``). The import of torch and
transformers is paid before the first call, so the ratio is loading, not importing.
The tests run it at a tiny size and check its lines (tests/inference/test_predict_reuse.py);
no test compares the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def subset_file(source: Path, count: int | None, dest: Path) -> Path:
    """``source`` cut to its first ``count`` images (and their annotations); the images
    stay in ``source``'s folder (pass it as the image folder)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    images = data["images"][:count] if count else data["images"]
    keep = {img["id"] for img in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in keep])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(data), encoding="utf-8")
    return dest


def train_experiment(workdir: Path, train_images: int | None) -> Path:
    """One epoch of the quick start's LoRA settings on domain B, no replay."""
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.trainer import TeacherTrainer

    train = subset_file(EXAMPLES / "domain_b" / "train.json", train_images, workdir / "data" / "train.json")
    val = subset_file(EXAMPLES / "domain_b" / "test.json", 4, workdir / "data" / "val.json")
    host = get_plugin_manager()
    config = resolve_config(host.config_model(), config_file=EXAMPLES / "quickstart.yaml", sets=[
        "training.epochs=1", "teachers.sam.epochs=1", "training.replay.data=null", "training.num_workers=0",
        f"teachers.grounding_dino.base={EXAMPLES / 'pretrained' / 'grounding_dino'}",
        f"teachers.sam.base={EXAMPLES / 'pretrained' / 'sam'}"])
    out = workdir / "exp"
    images = EXAMPLES / "domain_b"
    TeacherTrainer(train, val, images, out, config, val_image_dir=images, host=host, quiet=True).train()
    return out


def measure(experiment: Path, images: list[Path], device: str | None, threads: int | None) -> dict[str, float]:
    import torch  # imported before the clock starts: the ratio is about loading, not importing
    import transformers  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    from teacherkit.inference import load_experiment

    exp = load_experiment(experiment, device=device)
    seconds = {}
    for call in ("first", "second"):
        start = time.perf_counter()
        exp.predict(images)
        seconds[call] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", type=Path, help="a trained experiment (default: train one)")
    parser.add_argument("--images", type=int, default=8, help="domain-B test images per predict call")
    parser.add_argument("--train-images", type=int, default=None,
                        help="domain-B training images for the bench's own experiment (default: all 96)")
    parser.add_argument("--workdir", type=Path, help="where the bench's own experiment goes (default: a temp folder)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; on a shared machine "
                        "1 avoids the oversubscription that swamps these small models)")
    parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="predict-reuse-") as tmp:
        experiment = args.experiment
        if experiment is None:
            experiment = train_experiment(args.workdir or Path(tmp), args.train_images)
            print(f"experiment: {experiment} (1 epoch on domain B from examples/pretrained)")
        else:
            print(f"experiment: {experiment}")
        images = sorted((EXAMPLES / "domain_b" / "images").glob("test_*.png"))[: args.images]
        print(f"images per call: {len(images)}")
        seconds = measure(experiment, images, args.device, args.threads)
    ratio = seconds["first"] / max(seconds["second"], 1e-9)
    print(f"first call (loads the teachers): {seconds['first']:.3f} s")
    print(f"second call (reuses them): {seconds['second']:.3f} s")
    print(f"ratio first/second: {ratio:.1f}x")
    if args.json_path:
        record = {"benchmark": "predict_reuse", "command": " ".join([sys.executable, *sys.argv]),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": {"platform": platform.platform(), "processor": platform.machine()},
                  "images": len(images), "threads": args.threads, "seconds": seconds, "ratio": ratio}
        Path(args.json_path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
