"""Training engine: the loop and its hooks, checkpoints, early stopping, logging.

``from teacherkit.training import TeacherTrainer`` works (seed API); the name is resolved
on first use, so importing this package stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["TeacherTrainer"]


def __getattr__(name: str) -> Any:
    if name == "TeacherTrainer":
        from teacherkit.training.trainer import TeacherTrainer

        return TeacherTrainer
    raise AttributeError(f"module 'teacherkit.training' has no attribute {name!r}")
