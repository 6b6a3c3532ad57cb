"""README command 1's main job, timed: the quick start's ``teacherkit`` commands (train, then
evaluate) exactly as the README's first Quick start block writes them, each in its own
process, after the installs (which are not timed). The run folder is a temporary one, so
the reader's ``runs/quickstart`` is left alone.

Printed and recorded per command: wall seconds and CPU seconds (the command's process and
every process it waited for: DataLoader workers included), next to the README's promise
for the whole job (under 3 minutes on 2 CPU cores).

    python bench/quickstart_time.py --json bench/results/quickstart-DATE.json
    python bench/quickstart_time.py --print-commands      # what it would run, nothing run
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: README's promise for command 1's main job on the project's 2-core CPU machine
PROMISE_S = 180.0


def readme_commands(readme: Path, run_dir: str) -> list[list[str]]:
    """The ``teacherkit`` commands of the first bash block under "## Quick start", as argv
    lists, the run folder (train's ``--output``) replaced by ``run_dir`` everywhere."""
    section = readme.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", section, flags=re.S)
    if not blocks:
        raise SystemExit(f"{readme}: no bash block under '## Quick start'")
    commands = [shlex.split(part) for part in blocks[0].split("&&")]
    commands = [argv for argv in commands if argv and argv[0] == "teacherkit"]
    train = next((argv for argv in commands if argv[1:2] == ["train"]), None)
    if train is None or "--output" not in train:
        raise SystemExit(f"{readme}: the quick start block has no 'teacherkit train ... --output DIR'")
    output = train[train.index("--output") + 1]
    return [[run_dir if token == output else token for token in argv] for argv in commands]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str]) -> dict[str, Any]:
    """Run one ``teacherkit`` command with this interpreter's teacherkit; its wall and CPU seconds."""
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "teacherkit.cli", *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {"command": shlex.join(argv), "wall_s": round(wall, 1), "cpu_s": round(children_cpu() - cpu, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--print-commands", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        commands = readme_commands(args.readme, str(Path(tmp) / "run"))
        if args.print_commands:
            print("\n".join(shlex.join(c) for c in commands))
            return 0
        rows = []
        for command in commands:
            rows.append(run(command))
            print(f"{rows[-1]['wall_s']:7.1f} s wall {rows[-1]['cpu_s']:7.1f} s CPU  {command[1]}", flush=True)
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    print(f"{wall:7.1f} s wall {cpu:7.1f} s CPU  in all (README: under {PROMISE_S:.0f} s on 2 CPU cores)")
    if args.json:
        sys.path.insert(0, str(Path(__file__).parent))
        from train_throughput import run_record

        record = {"kind": "quickstart", **run_record("bench/quickstart_time.py", argv),
                  "promise_s": PROMISE_S, "rows": rows, "total_wall_s": round(wall, 1), "total_cpu_s": round(cpu, 1)}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
