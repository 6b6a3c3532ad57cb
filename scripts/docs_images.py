"""Refresh the pictures of docs/report.md from a finished quick start.

Copies what training and ``teacherkit evaluate`` drew in the experiment (results.png, the
best prediction grids, the curves) into ``docs/images/``, and takes a screenshot of the
report page with headless Chromium::

    teacherkit train --config examples/quickstart.yaml --data examples/domain_b/train.json \\
        --val examples/domain_b/val.json --output runs/quickstart --seed 42
    teacherkit evaluate runs/quickstart --data examples/domain_b/test.json \\
        --reference examples/domain_a/test.json
    python scripts/docs_images.py runs/quickstart

Every picture is written again as an optimised 256-colour PNG, at most ``--max-width`` pixels
wide, so the committed files stay small. ``docs/images/source.json`` records where they
came from (the experiment's seed, date and teacherkit version).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_IMAGES = ROOT / "docs" / "images"
#: docs/images name -> (teacher, path inside that teacher's folder)
PICTURES = {
    "results.png": ("grounding_dino", "results.png"),
    "predictions_grounding_dino.png": ("grounding_dino", "pictures/predictions_best.png"),
    "predictions_sam.png": ("sam", "pictures/predictions_best.png"),
    "pr_curve.png": ("grounding_dino", "pictures/pr_curve.png"),
    "f1_curve.png": ("grounding_dino", "pictures/f1_curve.png"),
    "confusion_matrix.png": ("grounding_dino", "pictures/confusion_matrix.png"),
    "iou_histogram.png": ("sam", "pictures/iou_histogram.png"),
    "iou_per_class.png": ("sam", "pictures/iou_per_class.png"),
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def small_png(source: Path, target: Path, max_width: int) -> None:
    """``source`` scaled down to ``max_width`` (never up) and saved optimised."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        tmp = target.with_suffix(".tmp.png")
        # 256 colours: plots and the drawn grids keep their look at a fraction of the bytes
        image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        image.save(tmp, format="PNG", optimize=True)
        tmp.replace(target)


def screenshot(page: Path, target: Path, *, width: int = 1100, height: int = 1600) -> None:
    """The top of ``page`` as Chromium draws it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no chromium on PATH: install Debian's 'chromium' (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/p", f"--window-size={width},{height}",
                        "--virtual-time-budget=5000", f"--screenshot={shot}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        small_png(shot, target, width)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="a finished quick start (teacherkit train, then evaluate)")
    parser.add_argument("--output", type=Path, default=DOCS_IMAGES, help="where the pictures go")
    parser.add_argument("--max-width", type=int, default=900, help="pictures wider than this are scaled down")
    args = parser.parse_args(argv)
    exp: Path = args.experiment
    missing = [str(exp / "teachers" / t / p) for t, p in PICTURES.values() if not (exp / "teachers" / t / p).is_file()]
    if missing:
        sys.exit("not a finished quick start; missing:\n  " + "\n  ".join(missing))
    args.output.mkdir(parents=True, exist_ok=True)
    for name, (teacher, rel) in PICTURES.items():
        small_png(exp / "teachers" / teacher / rel, args.output / name, args.max_width)
    from teacherkit.reporting.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(build_report(exp), encoding="utf-8")
        screenshot(page, args.output / "report.png")
    meta = json.loads((exp / "metadata.json").read_text(encoding="utf-8"))
    config = (exp / "teacher_config.yaml").read_text(encoding="utf-8")
    seed = next((line.split(":", 1)[1].strip() for line in config.splitlines() if line.strip().startswith("seed:")),
                None)
    command = "python scripts/docs_images.py " + " ".join(argv if argv is not None else sys.argv[1:])
    source = {"experiment": exp.name, "seed": seed, "started": meta.get("started"),
              "versions": meta.get("versions"), "command": command, "pictures": sorted([*PICTURES, "report.png"])}
    (args.output / "source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(PICTURES) + 1} pictures to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
