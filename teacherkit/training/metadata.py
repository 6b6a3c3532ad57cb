"""``metadata.json`` of an experiment: versions, data fingerprints, device, status, and per
teacher its parameters and results. Written atomically, also when a run fails, so the
folder always says how it ended."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_text

METADATA_VERSION = 1


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def versions(host: Any) -> dict[str, str | None]:
    """Versions of python, the libraries training depends on, and every plugin's distribution."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("teacherkit", "torch", "transformers", "peft", "accelerate", "pycocotools", "albumentations"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    for info in host.infos:
        if info.distribution and info.distribution not in out:
            out[info.distribution] = info.version
    return out


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def data_section(train_path: Path, val_path: Path | None, replay: Any, info: Any,
                 fingerprints: dict[str, str | None] | None = None,
                 images: dict[str, Path | None] | None = None) -> dict[str, Any]:
    """What the run trained and scored on: paths (as given, and absolute, so ``evaluate``
    finds them from another folder), image folders (``images``, per split), fingerprints
    (``fingerprints`` when the caller has them already), sizes, classes, kinds."""
    fp = fingerprints or {"train": file_fingerprint(train_path),
                          "val": file_fingerprint(val_path) if val_path else None}
    folders = images or {}

    def entry(split: str, path: Path) -> dict[str, Any]:
        folder = folders.get(split)
        return {"path": str(path), "absolute": str(Path(path).resolve()), "fingerprint": fp[split],
                "images": str(Path(folder).resolve()) if folder else None}

    return {
        "train": entry("train", train_path),
        "val": entry("val", val_path) if val_path else None,
        "replay": replay.metadata() if replay is not None else None,
        "num_images": info.num_images, "num_annotations": info.num_annotations,
        "classes": info.class_names, "annotation_kinds": info.annotation_kinds,
    }


def teacher_section(specs: list[Any], results: dict[str, Any], reports: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        result = results.get(spec.name)
        entry: dict[str, Any] = {"parameters": reports.get(spec.name)}
        if result is None:
            entry["status"] = "not run"
        else:
            entry.update({k: v for k, v in asdict(result).items() if k != "history"})
        entry["final_metrics"] = result.history[-1] if result is not None and result.history else None
        out[spec.name] = entry
    return out


def _previous(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_metadata(path: Path, *, host: Any, data: dict[str, Any], teachers: dict[str, Any],
                   accelerator: Any, started: float, status: str, selection: list[str] | None = None) -> None:
    """Write ``metadata.json``; ``started`` of an earlier run of the same experiment is kept.

    It is written when the run starts (status ``running``: the fingerprints and the teacher
    ``selection`` that ``--resume`` checks must survive a kill) and again when it ends."""
    path = Path(path)
    previous = _previous(path)
    record = {
        "teacherkit_metadata_version": METADATA_VERSION,
        "status": status,
        "command": sys.argv,
        "versions": versions(host),
        "device": {"type": accelerator.device.type, "name": device_name(accelerator.device),
                   "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision},
        "data": data,
        "selection": {"teachers": selection} if selection is not None else previous.get("selection"),
        "teachers": teachers,
        "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))),
        "seconds_this_run": round(time.time() - started, 2),
    }
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def summary_row(name: str, result: Any, monitor: str | None = None) -> dict[str, Any]:
    """One teacher's line of the results table printed at the end of a run: ``base`` is
    epoch 0 (the model before training), ``best epoch`` says ``0 (base)`` when no trained
    epoch beat it."""
    last = result.history[-1] if result.history else {}
    row: dict[str, Any] = {"teacher": name, "epochs": result.epochs_run}
    if last.get("train_loss") is not None:
        row["train loss"] = last["train_loss"]
    if monitor:
        row["metric"] = monitor
        base = getattr(result, "base_metric", None)
        row["base"] = base if base is not None else "-"
        row["last"] = last.get(monitor, "-")
        row["best"] = result.best_metric if result.best_metric is not None else "-"
        best_epoch = result.best_epoch
        row["best epoch"] = "-" if best_epoch is None else "0 (base)" if best_epoch == 0 else best_epoch
    row["img/s"] = round(result.images_per_second, 1)
    return row
