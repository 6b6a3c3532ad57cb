"""Checkpoints that are complete or absent.

A checkpoint is a folder:

``trainable.safetensors``
    the parameters the optimiser updates (LoRA weights, trainable heads);
``state.pt``
    :meth:`TrainState.to_state <teacherkit.training.state.TrainState.to_state>`: optimizer,
    scheduler, grad scaler, RNG states, position, early stopping, metric history; plain
    containers and tensors only, so it loads with ``torch.load(weights_only=True)``;
``meta.json``
    the same position and metrics, readable by people.

It is written inside :func:`teacherkit.atomic.atomic_dir`, so a crash leaves the old
checkpoint or the new one, never a mix; readers call :func:`teacherkit.atomic.recover_dir`
first, so a crash between the two renames of a swap loses nothing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from teacherkit.atomic import atomic_dir, recover_dir
from teacherkit.errors import TeacherkitError
from teacherkit.training.state import TrainState
from teacherkit.training.stopping import EarlyStopping

__all__ = [
    "CheckpointError", "CheckpointManager", "EarlyStopping", "capture_rng_state", "load_checkpoint",
    "load_train_state", "nonfinite_tensors", "read_meta", "restore_rng_state", "save_checkpoint",
]

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


# -- folders ----------------------------------------------------------------------------------


def nonfinite_tensors(tensors: dict[str, Any]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity (one device sync for all)."""
    import torch

    names = [name for name, t in tensors.items() if t.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(tensors[n]).all() for n in names]).tolist()
    return [name for name, ok in zip(names, flags) if not ok]


def save_checkpoint(final: Path, trainable: dict[str, Any], state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint folder at ``final`` atomically (old or new, never a mix)."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(Path(final)) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / TRAINABLE_FILE))
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float) + "\n", encoding="utf-8")


def read_meta(directory: Path) -> dict[str, Any] | None:
    """``meta.json`` of a complete checkpoint folder (after undoing an interrupted swap),
    ``None`` when there is none or it is incomplete."""
    directory = Path(directory)
    recover_dir(directory)
    if not all((directory / f).is_file() for f in (TRAINABLE_FILE, STATE_FILE, META_FILE)):
        return None
    try:
        return json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(trainable tensors, state, meta)`` of a checkpoint folder; state loads with
    ``weights_only=True``. A ``<name>.old`` left by a crash mid-swap is put back first."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    recover_dir(directory)
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


def load_train_state(directory: Path) -> tuple[dict[str, Any], TrainState]:
    """``(trainable tensors, TrainState)`` of a checkpoint folder."""
    trainable, state, meta = load_checkpoint(directory)
    if "finished" not in state:  # checkpoints from before TrainState kept it in meta.json only
        state = {**state, "finished": bool(meta.get("finished"))}
    try:
        return trainable, TrainState.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: {STATE_FILE} is not a teacherkit training state: {exc!r}") from exc


@dataclass
class CheckpointManager:
    """``last`` and ``best`` checkpoints of one teacher plus its early stopping (seed API:
    ``CheckpointManager.should_stop``)."""

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
