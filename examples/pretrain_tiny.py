"""Pretrain the shipped tiny teacher pair on synthetic domain A (seeded, one command).

No machine here can download Grounding DINO or SAM weights, and LoRA on a random base
learns little. This script makes a small *pretrained* base instead, the way a real one
is made: it writes the synthetic domains (``examples/domain_a``, ``examples/domain_b``;
see ``examples/domains.py``), fully trains a tiny Grounding DINO and a tiny SAM on domain
A with teacherkit's own trainer (``--preset tiny``, ``finetune: full``), and turns the best
epoch of each into a base folder that ``from_pretrained`` and
``teachers.<name>.base=<folder>`` load:

    examples/pretrained/grounding_dino/   config.json, model.safetensors (fp16), tokenizer, image processor
    examples/pretrained/sam/              config.json, model.safetensors (fp16), SamProcessor
    examples/pretrained/pretraining.json  seed, settings, versions, metrics on domain A

Weights are stored in fp16 (half the bytes) while ``config.json`` says float32, so
``from_pretrained`` hands back an fp32 model that trains on any CPU.

    python examples/pretrain_tiny.py                 # ~10-15 min on 2 CPU cores; uses CUDA when present
    python examples/pretrain_tiny.py --overwrite     # replace examples/pretrained

The same seed gives the same weights on the CPU (one thread, as set here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # domains.py sits next to this script

#: Sizes of the tiny pair: small enough to ship (a few MB) and to train on a CPU.
DINO_SETTINGS = [
    "teachers.grounding_dino.shortest_edge=128", "teachers.grounding_dino.longest_edge=128",
    "teachers.grounding_dino.tiny.d_model=64", "teachers.grounding_dino.tiny.ffn_dim=128",
    "teachers.grounding_dino.tiny.heads=4",
    "teachers.grounding_dino.box_threshold=0.05", "teachers.grounding_dino.text_threshold=0.05",
]
#: SAM pretrains with a light focal term: at the paper's weight (20) a random tiny SAM first
#: collapses to empty masks and needs hundreds of steps to climb back out (seen in short runs
#: on domain A, 2026-11-26; docs/teacher-quality.md).
SAM_SETTINGS = ["teachers.sam.image_size=128", "teachers.sam.max_instances=8", "teachers.sam.focal_weight=1.0"]
#: epochs, batch size, peak learning rate of each teacher's pretraining
SCHEDULE = {"grounding_dino": (24, 8, 1e-3), "sam": (24, 8, 2e-3)}
PRETRAINED_DIR = HERE / "pretrained"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="where the base folders go")
    parser.add_argument("--data", type=Path, default=HERE,
                        help="parent of domain_a/ and domain_b/ (written if missing)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretrain_tiny"), help="experiment folders")
    parser.add_argument("--seed", type=int, default=0, help="training seed (data have their own fixed seeds)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of both teachers")
    parser.add_argument("--models", default="grounding_dino,sam", help="teachers to pretrain")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1 is fastest on a small, shared CPU: no thread hand-offs)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing base folders and experiments")
    return parser.parse_args(argv)


def ensure_domains(root: Path) -> dict[str, dict[str, Path]]:
    """The split files of both domains, generated (seeded) when missing."""
    from domains import DOMAIN_A, DOMAIN_B, SPLITS, write_domain

    out: dict[str, dict[str, Path]] = {}
    for domain in (DOMAIN_A, DOMAIN_B):
        folder = root / domain.name
        paths = {split: folder / f"{split}.json" for split in SPLITS[domain.name]}
        if not all(p.is_file() for p in paths.values()):
            print(f"writing {folder}")
            paths = write_domain(folder, domain)
        out[domain.name] = paths
    return out


def pretrain(name: str, data: dict[str, Path], workdir: Path, args: argparse.Namespace) -> Path:
    """Fully train one tiny teacher on domain A; returns its experiment folder."""
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.trainer import TeacherTrainer

    epochs, batch, lr = SCHEDULE[name]
    epochs = args.epochs or epochs
    host = get_plugin_manager()
    sets = (DINO_SETTINGS if name == "grounding_dino" else SAM_SETTINGS) + [
        f"training.epochs={epochs}", f"training.batch_size={batch}", f"training.lr={lr}",
        f"training.seed={args.seed}", "training.num_workers=0", f"training.device={args.device}",
        f"teachers.{name}.tiny.seed={args.seed}" if name == "grounding_dino" else f"teachers.sam.seed={args.seed}",
        "experiment.name=pretrain-" + name,
    ]
    output = workdir / name
    if name == "sam":
        init = workdir / "sam_init"
        write_sam_init(init, args.seed)
        sets.append(f"teachers.sam.base={init}")
    config = resolve_config(host.config_model(), preset="tiny", sets=sets)
    trainer = TeacherTrainer(data["train"], data["val"], output_dir=output, config=config, models=[name],
                             overwrite=args.overwrite, host=host)
    trainer.train()
    return output


def write_sam_init(folder: Path, seed: int) -> None:
    """The tiny SAM's random initialisation as a base folder, with one change.

    transformers draws SAM's random Fourier position features with std ``hidden_size // 2``
    (16 for the tiny width), written for checkpoints that overwrite them. On the tiny
    model's 16×16 grid such frequencies alias: neighbouring cells get unrelated codes and a
    box prompt cannot be matched to image positions (in short runs mIoU stalled at about the
    box-filling level, and rose well past it with std 1). The original SAM draws them with
    std 1; so does this script.
    """
    import torch
    from transformers import SamModel

    from teacherkit_sam.loading import ImageSettings, make_processor, tiny_sam_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(tiny_sam_config(128))
        torch.nn.init.normal_(model.shared_image_embedding.positional_embedding, std=1.0)
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))
    make_processor(ImageSettings(size=128)).save_pretrained(str(folder))


def export_base(name: str, experiment: Path, target: Path) -> dict[str, Any]:
    """The best epoch's full model (``teachers/<name>/adapter``) as a base folder, fp16 on
    disk, written beside ``target`` and moved into place."""
    from teacherkit.atomic import atomic_replace_dir

    adapter = experiment / "teachers" / name / "adapter"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    if name == "grounding_dino":
        from transformers import AutoTokenizer

        from teacherkit_dino.modeling import LoadedBase, TeacherGroundingDino, save_base

        model = TeacherGroundingDino.from_pretrained(str(adapter), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter), local_files_only=True)
        meta = json.loads((adapter / "teacherkit_adapter.json").read_text(encoding="utf-8"))
        save_base(LoadedBase(model=model, tokenizer=tokenizer, source="pretrained (teacherkit examples)",
                             extra={"class_names": meta["class_names"]}), tmp)
    else:
        from transformers import SamModel

        from teacherkit_sam.loading import ImageSettings, make_processor

        model = SamModel.from_pretrained(str(adapter), local_files_only=True)
        model.save_pretrained(str(tmp))
        make_processor(ImageSettings(size=int(model.config.vision_config.image_size))).save_pretrained(str(tmp))
    halve_weights(tmp / "model.safetensors")
    set_float32_config(tmp / "config.json")
    for file in tmp.iterdir():
        file.chmod(0o644)  # temp-file writers create 0600; these files are meant to be shared
    atomic_replace_dir(tmp, target)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "bytes": sum(f.stat().st_size for f in target.iterdir() if f.is_file())}


def halve_weights(path: Path) -> None:
    """Rewrite a safetensors file with its float32 tensors as float16 (half the bytes).
    The tiny models' weights stay well inside fp16's range; see ``fp16_error`` in
    pretraining.json for the largest change in any weight."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    halved = {k: v.to(torch.float16) if v.dtype == torch.float32 else v for k, v in tensors.items()}
    overflow = [k for k, v in halved.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:
        raise RuntimeError(f"{path}: weights overflow float16: {overflow[:3]}")
    save_file(halved, str(path), metadata={"format": "pt"})


def set_float32_config(path: Path) -> None:
    """Say float32 in config.json so ``from_pretrained`` (dtype 'auto') loads an fp32 model
    from the fp16 file; an fp16 model would not train on a CPU."""

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("dtype", "torch_dtype"):
                if key in node:
                    node[key] = "float32"
            for value in node.values():
                fix(value)

    config = json.loads(path.read_text(encoding="utf-8"))
    fix(config)
    config["dtype"] = "float32"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from teacherkit.atomic import atomic_write_json
    from teacherkit.errors import OutputExistsError
    from teacherkit.training.trainer import METADATA_FILE, _versions

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCHEDULE))
    if unknown:
        raise SystemExit(f"error: --models: unknown teacher(s) {unknown}; choose from {sorted(SCHEDULE)}")
    existing = [args.out / n for n in names if (args.out / n).exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"{existing[0]} already exists; pass --overwrite to replace it")
    data = ensure_domains(args.data)
    record_path = args.out / "pretraining.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record.update({"domain": "domain_a (examples/domains.py)", "seed": args.seed, "command": sys.argv,
                   "date": time.strftime("%Y-%m-%d")})
    record.setdefault("teachers", {})
    for name in names:
        started = time.time()
        experiment = pretrain(name, data["domain_a"], args.workdir, args)
        exported = export_base(name, experiment, args.out / name)
        metadata = json.loads((experiment / METADATA_FILE).read_text(encoding="utf-8"))
        result = metadata["teachers"][name]
        record["teachers"][name] = {
            "settings": DINO_SETTINGS if name == "grounding_dino" else SAM_SETTINGS,
            "schedule": dict(zip(("epochs", "batch_size", "lr"), SCHEDULE[name], strict=True)),
            "best_epoch": result.get("best_epoch"), "best_val_metric": result.get("best_metric"),
            "device": metadata["device"], "seconds": round(time.time() - started, 1), **exported,
        }
        print(f"{name}: base written to {args.out / name} ({exported['bytes'] / 1e6:.2f} MB, "
              f"best val {result.get('best_metric')} at epoch {result.get('best_epoch')})")
    from teacherkit.plugins import get_plugin_manager

    record["versions"] = _versions(get_plugin_manager())
    atomic_write_json(record_path, record, indent=2)
    return 0


if __name__ == "__main__":
    from teacherkit.errors import TeacherkitError

    try:
        sys.exit(main())
    except TeacherkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
