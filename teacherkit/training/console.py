"""What the user sees while training: a live progress bar with ETA and loss, one line per
epoch, a summary table at the end. Plain lines when stdout is not a terminal; nothing but
warnings with ``quiet``. Only the main process reports."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

#: Decimals of the epoch table's columns, fixed per column (rows print one at a time, so a
#: column cannot adapt to values it has not seen); metrics and losses get four.
_EPOCH_DECIMALS = {"seconds": 1, "peak_mem_gib": 2, "img_per_s": 1, "lr": 6}


def _fmt(value: Any, column: str = "") -> str:
    """A cell of the epoch table; ``None`` (nothing logged: the base's training loss) is a dash."""
    from teacherkit.reporting.numbers import format_number

    if column == "epoch" and value == 0:
        return "0 (base)"
    if isinstance(value, float):
        return format_number(value, _EPOCH_DECIMALS.get(column, 4))
    return format_number(value)


class Reporter:
    def __init__(self, *, quiet: bool = False, enabled: bool = True, tty: bool | None = None) -> None:
        self.quiet = quiet or not enabled
        self.tty = sys.stdout.isatty() if tty is None else tty
        # logs and CI are not 80-column terminals: keep tables whole there
        self.console = Console(highlight=False, soft_wrap=True, width=None if self.tty else 120)
        self._columns: list[str] = []

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        Console(stderr=True, highlight=False).print(f"warning: {text}", markup=False)

    # -- per teacher ------------------------------------------------------------------------
    def start_teacher(self, name: str, summary: str, n_train: int, n_val: int, epochs: int, device: str) -> None:
        self._columns = []
        self.line(f"\n== {name}: {summary}")
        self.line(f"   {n_train} training images, {n_val} validation images, {epochs} epochs on {device}")

    def epoch_progress(self, epoch: int, epochs: int, total: int) -> _Progress:
        return _Progress(self, f"epoch {epoch + 1}/{epochs}", total)

    def epoch_row(self, row: dict[str, Any]) -> None:
        """One line per epoch under a header; epoch 0 is the base (no training loss, shown
        as a dash). A row with a column the header lacks (a loss part first logged in
        epoch 1, after the base) prints the header again, widened."""
        if self.quiet:
            return
        new = [c for c in row if c not in self._columns]
        if new:
            self._columns += new
            self.console.print("  ".join(f"{c:>10}" for c in self._columns), markup=False)
        self.console.print("  ".join(f"{_fmt(row.get(c, ''), c):>10}" for c in self._columns), markup=False)

    def summary_table(self, title: str, rows: Sequence[dict[str, Any]]) -> None:
        if self.quiet or not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="right" if column != "teacher" else "left")
        from teacherkit.reporting.numbers import format_column

        cells = {c: format_column([row.get(c, "") for row in rows]) for c in columns}
        for i in range(len(rows)):
            table.add_row(*(cells[c][i] for c in columns))
        self.console.print(table)


class _Progress:
    """A rich progress bar (terminal) or a few plain lines (logs, CI)."""

    def __init__(self, reporter: Reporter, label: str, total: int) -> None:
        self.reporter = reporter
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        self._next_plain = 0.25

    def __enter__(self) -> _Progress:
        if not self.reporter.quiet and self.reporter.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                console=self.reporter.console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, loss="")
        return self

    def update(self, advance: int, losses: dict[str, float]) -> None:
        self.done += advance
        text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, loss=text)
        elif not self.reporter.quiet and self.done / self.total >= self._next_plain:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done)
            self.reporter.line(f"   {self.label} {self.done}/{self.total} {text} eta {eta:.0f}s")
            self._next_plain += 0.25

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
