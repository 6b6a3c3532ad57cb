"""Checkpoints that are complete or absent, and early stopping whose state they carry.

A checkpoint is a folder:

``trainable.safetensors``
    the parameters the optimiser updates (LoRA weights, trainable heads);
``state.pt``
    optimizer, scheduler, grad scaler, RNG states (python, numpy, torch, cuda), epoch,
    step, sampler position, early-stopping state and the metric history; written with
    plain containers and tensors only so it loads with ``torch.load(weights_only=True)``;
``meta.json``
    the same position and metrics, readable by people.

It is written to a temporary sibling folder, fsynced and renamed into place
(:func:`teacherkit.atomic.atomic_replace_dir`), so a crash leaves the old checkpoint or the
new one, never a mix.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from teacherkit.atomic import atomic_replace_dir
from teacherkit.errors import TeacherkitError

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


class CheckpointError(TeacherkitError):
    exit_code = 2


# -- RNG state ------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """RNG states as containers ``torch.load(weights_only=True)`` accepts."""
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
         np_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


# -- early stopping ---------------------------------------------------------------------------


@dataclass
class EarlyStopping:
    """Tracks the monitored metric; says when an epoch is the best and when to stop."""

    mode: Literal["max", "min"] = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; return True when it improves on the best."""
        if value is None or not math.isfinite(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class CheckpointManager:
    """Saves ``last`` and ``best`` checkpoints of one teacher and decides early stopping
    (seed API: ``CheckpointManager.should_stop``)."""

    root: Path
    stopping: EarlyStopping = field(default_factory=EarlyStopping)

    @property
    def last_dir(self) -> Path:
        return Path(self.root) / "last"

    @property
    def best_dir(self) -> Path:
        return Path(self.root) / "best"

    def should_stop(self) -> bool:
        return self.stopping.should_stop()

    def save(self, which: Literal["last", "best"], trainable: dict[str, Any], state: dict[str, Any],
             meta: dict[str, Any]) -> Path:
        final = self.last_dir if which == "last" else self.best_dir
        save_checkpoint(final, trainable, state, meta)
        return final

    def copy_last_to_best(self) -> None:
        """The epoch just saved as ``last`` is also the best: copy it atomically."""
        tmp = self.best_dir.with_name(".best.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(self.last_dir, tmp)
        atomic_replace_dir(tmp, self.best_dir)


def save_checkpoint(final: Path, trainable: dict[str, Any], state: dict[str, Any], meta: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / TRAINABLE_FILE))
    torch.save(state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float) + "\n", encoding="utf-8")
    atomic_replace_dir(tmp, final)


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(trainable tensors, state, meta)`` of a checkpoint folder; state loads with
    ``weights_only=True``."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    missing = [f for f in (TRAINABLE_FILE, STATE_FILE, META_FILE) if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: incomplete checkpoint, missing {', '.join(missing)}")
    try:
        trainable = load_file(str(directory / TRAINABLE_FILE))
        state = torch.load(directory / STATE_FILE, weights_only=True, map_location="cpu")
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except Exception as exc:  # corrupt files: say which checkpoint
        raise CheckpointError(f"{directory}: cannot load checkpoint: {exc}") from exc
    return trainable, state, meta
