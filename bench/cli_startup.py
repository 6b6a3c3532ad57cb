"""How long the light commands take to start, next to the interpreter alone and an
interpreter that imports torch (what a light command would cost if it imported the
training stack). Each command runs in a fresh process, `--repeat` times; the median is
printed with its ratio to the bare interpreter.

    python bench/cli_startup.py                  # --help, --version, plugins --json
    python bench/cli_startup.py --repeat 11 --json out.json

The tests only check that these commands import no heavy library
(tests/core/test_cli.py); the time is a benchmark figure, since machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

COMMANDS = {
    "python (bare interpreter)": [sys.executable, "-c", "pass"],
    "teacherkit --help": [sys.executable, "-m", "teacherkit.cli", "--help"],
    "teacherkit --version": [sys.executable, "-m", "teacherkit.cli", "--version"],
    "teacherkit plugins --json": [sys.executable, "-m", "teacherkit.cli", "plugins", "--json"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def time_command(argv: list[str], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median reported)")
    parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    rows = {name: statistics.median(time_command(cmd, args.repeat)) for name, cmd in COMMANDS.items()}
    bare = rows["python (bare interpreter)"]
    print(f"{'command':40s} {'median s':>9s} {'x bare python':>14s}")
    for name, seconds in rows.items():
        print(f"{name:40s} {seconds:9.3f} {seconds / bare:14.1f}")
    if args.json_path:
        record = {
            "benchmark": "cli_startup",
            "command": " ".join([sys.executable, *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "python": platform.python_version()},
            "repeat": args.repeat,
            "median_seconds": rows,
        }
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
