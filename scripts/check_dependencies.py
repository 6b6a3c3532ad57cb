#!/usr/bin/env python3
"""Install the newest (or the oldest) releases our bounds allow into a fresh venv and run the
quick tests: what will the next newcomer get, and does it still work?

    python scripts/check_dependencies.py                 # newest allowed releases, quick tests
    python scripts/check_dependencies.py --lowest        # every direct dependency at its lower bound
    python scripts/check_dependencies.py --write-lock    # newest, and if the tests pass, rewrite constraints.txt
    python scripts/check_dependencies.py --all-tests     # the whole suite instead of -m "not slow"

Not part of .ci/run on purpose: CI installs the lock (constraints.txt), so a release published
tonight cannot fail tomorrow's CI; this script is how we find out about that release first.
It prints the versions that differ from the lock, releases newer than our upper bounds, and
the tests that broke. Exit status 0 when the tests pass. See docs/dependencies.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib  # Python 3.11+, like this machine; the script is a maintainer tool

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
PROJECTS = [".", "plugins/teacherkit_dino", "plugins/teacherkit_sam", "plugins/teacherkit_augment"]
TORCH = "torch==2.13.0"  # the build README command 1 installs first (CPU here; your CUDA build elsewhere)
#: test oracles installed without their declared dependencies, as .ci/run does
NO_DEPS = ["rf-groundingdino==0.3.0"]
NOT_LOCKED = {"torch", "pip"}  # torch: installed by its own README step, so a CUDA build can stand in


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    shown = " ".join(a if len(a) < 120 else a[:60].replace("\n", " ") + " ..." for a in argv)
    print("+", shown, flush=True)
    return subprocess.run(argv, cwd=ROOT, text=True, **kwargs)


def editable_args(test_extra: bool = True) -> list[str]:
    args: list[str] = []
    for project in PROJECTS:
        args += ["-e", f"{project}[test]" if project == "." and test_extra else project]
    return args


def install(venv: Path, lowest: bool) -> None:
    py = str(venv / "bin" / "python")
    if run([py, "-m", "pip", "install", "-q", TORCH]).returncode:
        sys.exit("could not install " + TORCH)
    if run([py, "-m", "pip", "install", "-q", "--no-deps", *NO_DEPS]).returncode:
        sys.exit("could not install " + " ".join(NO_DEPS))
    if not lowest:
        if run([py, "-m", "pip", "install", "-q", *editable_args()]).returncode:
            sys.exit("pip could not install the newest allowed releases (see above)")
        return
    # pip has no "oldest allowed" resolution; uv does. Torch stays the build installed above.
    if run([py, "-m", "pip", "install", "-q", "uv"]).returncode:
        sys.exit("could not install uv (needed for --lowest)")
    pins = venv / "torch-pin.txt"
    torch_version = run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True).stdout.strip()
    pins.write_text(f"torch=={torch_version}\n")
    done = run([str(venv / "bin" / "uv"), "pip", "install", "--python", py, "--resolution", "lowest-direct",
                "--constraint", str(pins), *editable_args()])
    if done.returncode:
        sys.exit("uv could not install the lowest allowed releases (see above)")


def frozen(venv: Path) -> dict[str, str]:
    out = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
              capture_output=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[normalise(name)] = version.strip()
    return versions


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock() -> dict[str, str]:
    if not LOCK.exists():
        return {}
    versions = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalise(name)] = version.strip()
    return versions


def print_differences(installed: dict[str, str], locked: dict[str, str]) -> None:
    changed = [(n, locked.get(n, "-"), v) for n, v in sorted(installed.items())
               if n not in NOT_LOCKED and locked.get(n) != v]
    gone = sorted(set(locked) - set(installed))
    print(f"\n== versions that differ from {LOCK.name}: {len(changed)} changed/new, {len(gone)} gone")
    for name, old, new in changed:
        print(f"  {name:32s} {old:>14s} -> {new}")
    for name in gone:
        print(f"  {name:32s} {locked[name]:>14s} -> (not installed)")


def direct_requirements() -> list[str]:
    reqs: list[str] = []
    for project in PROJECTS:
        data = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]
        reqs += data.get("dependencies", [])
        reqs += data.get("optional-dependencies", {}).get("test", [])
    return list(dict.fromkeys(r for r in reqs if not r.startswith("teacherkit")))


_BEYOND = """
import json, sys
from packaging.requirements import Requirement
from packaging.version import Version
for req, versions in json.loads(sys.argv[1]).items():
    spec = Requirement(req).specifier
    final = [Version(v) for v in versions if not Version(v).is_prerelease]
    allowed = [v for v in final if v in spec]
    beyond = [str(v) for v in final if v not in spec and (not allowed or v > max(allowed))]
    if beyond:
        print(f"  {req:55s} excludes {', '.join(beyond[:5])}")
"""


def print_releases_beyond_bounds(venv: Path) -> None:
    """Releases that exist but our upper bounds exclude: candidates for the next bump."""
    available = {}
    for req in direct_requirements():
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        listing = run([str(venv / "bin" / "python"), "-m", "pip", "index", "versions", name],
                      capture_output=True).stdout
        match = re.search(r"Available versions: (.*)", listing)
        if match:
            available[req.split(";")[0].strip()] = match.group(1).split(", ")
    print("\n== newer releases our upper bounds exclude")
    out = run([str(venv / "bin" / "python"), "-c", _BEYOND, json.dumps(available)], capture_output=True).stdout
    print(out.rstrip() or "  none")


def run_tests(venv: Path, all_tests: bool) -> tuple[int, list[str]]:
    argv = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "-rfE"]
    if not all_tests:
        argv += ["-m", "not slow"]
    done = run(argv, capture_output=True)
    print(done.stdout[-4000:])
    broken = [ln for ln in done.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return done.returncode, broken


def write_lock(installed: dict[str, str]) -> None:
    lines = ["# The exact, tested set of every package teacherkit, its plugins and the test extras install",
             "# (torch apart: README command 1 installs it first, so a CUDA build can stand in).",
             "# README commands 1 and 2 and .ci/run install with `-c constraints.txt`.",
             "# Refresh: python scripts/check_dependencies.py --write-lock   (docs/dependencies.md)"]
    lines += [f"{name}=={version}" for name, version in sorted(installed.items()) if name not in NOT_LOCKED]
    tmp = LOCK.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, LOCK)
    print(f"wrote {LOCK} ({len(lines) - 4} packages)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lowest", action="store_true", help="direct dependencies at their lower bounds (uv)")
    parser.add_argument("--write-lock", action="store_true", help="rewrite constraints.txt when the tests pass")
    parser.add_argument("--all-tests", action="store_true", help="run the slow tests too")
    parser.add_argument("--venv", type=Path, help="venv folder to create (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary venv")
    args = parser.parse_args()
    if args.lowest and args.write_lock:
        parser.error("--write-lock locks the newest releases; do not combine it with --lowest")
    venv = args.venv or Path(tempfile.mkdtemp(prefix="teacherkit-deps-")) / "venv"
    try:
        if run([sys.executable, "-m", "venv", str(venv)]).returncode:
            sys.exit(f"could not create a venv at {venv}")
        install(venv, args.lowest)
        installed = frozen(venv)
        print_differences(installed, read_lock())
        print_releases_beyond_bounds(venv)
        code, broken = run_tests(venv, args.all_tests)
        print(f"\n== {'lowest' if args.lowest else 'newest'} allowed releases: "
              + ("tests pass" if code == 0 else f"{len(broken)} test(s) broke (exit {code})"))
        for line in broken:
            print("  " + line)
        if args.write_lock and code == 0:
            write_lock(installed)
        return 0 if code == 0 else 1
    finally:
        if not args.keep and args.venv is None:
            shutil.rmtree(venv.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
