"""Gather an experiment folder into the sections of :mod:`teacherkit.reporting.html`.

Everything is read from files the training (and, when given, ``teacherkit evaluate
--json``) wrote; nothing is loaded onto a device. A missing piece leaves its section out
or says so; it never stops the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from teacherkit.layout import ExperimentLayout
from teacherkit.reporting import html as h
from teacherkit.reporting.numbers import UNDEFINED, decimals_for, format_column, format_signed
from teacherkit.reporting.paths import CURVE_PICTURES, GRID_TAGS, ReportPaths
from teacherkit.reporting.results import read_results_csv

#: Headline metrics shown per epoch, in this order, when present.
HEADLINE = ("bbox_AP", "bbox_AP50", "bbox_AP75", "mIoU", "mDice", "segm_AP", "segm_AP50", "val_loss", "train_loss")
#: Where ``teacherkit evaluate --json`` output is looked for when no file is named.
EVALUATION_FILE = "evaluation.json"
#: Folder where ``teacherkit evaluate`` draws its base and tuned grids, one sub-folder per teacher.
EVALUATION_PICTURES = "evaluation"
UNKNOWN = "unknown"


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def overview_section(layout: ExperimentLayout, meta: dict[str, Any]) -> str:
    pairs = [("folder", layout.root), ("status", meta.get("status", UNKNOWN)),
             ("teachers", ", ".join(meta.get("teachers", {})) or UNKNOWN)]
    for key in ("started", "finished", "seconds"):
        if key in meta:
            pairs.append((key, meta[key]))
    device = meta.get("device") or {}
    if device:
        pairs.append(("device", device.get("name") or device.get("type")))
    versions = meta.get("versions") or {}
    if versions:
        pairs.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    return "<h2>Run</h2>" + h.key_values(pairs)



def data_section(layout: ExperimentLayout, meta: dict[str, Any]) -> str:
    info = read_json(layout.dataset_info) or {}
    data = meta.get("data") or {}
    pairs: list[tuple[str, Any]] = []
    for key in ("train", "val"):
        entry = data.get(key)
        if isinstance(entry, dict):
            pairs.append((key, entry.get("path", "")))
    for key in ("num_images", "num_annotations", "num_classes"):
        if key in info:
            pairs.append((key.replace("_", " "), info[key]))
    kinds = data.get("annotation_kinds") or info.get("annotation_kinds")
    if kinds:
        pairs.append(("annotation kinds", ", ".join(kinds)))
    classes = data.get("classes") or info.get("class_names")
    if classes:
        pairs.append(("classes", ", ".join(map(str, classes))))
    return "<h2>Data</h2>" + (h.key_values(pairs) if pairs else '<p class="note">no dataset_info.json</p>')


def config_section(layout: ExperimentLayout) -> str:
    try:
        text = layout.config.read_text(encoding="utf-8")
    except OSError:
        return '<h2>Configuration</h2><p class="note">no teacher_config.yaml</p>'
    return (f"<h2>Configuration</h2><details><summary>{h.esc(layout.config.name)}</summary>"
            f"<pre>{h.esc(text)}</pre></details>")


def epoch_table(rows: list[dict[str, Any]], best_epoch: int | None) -> str:
    """Headline metrics of the base (epoch 0, when evaluated), the best epoch and the last;
    the base's column says ``best`` too when no trained epoch beat it."""
    if not rows:
        return '<p class="note">no results.csv</p>'
    chosen: list[tuple[str, dict[str, Any]]] = []
    by_epoch = {int(r["epoch"]): r for r in rows}
    if 0 in by_epoch:
        chosen.append(("base = best (epoch 0)" if best_epoch == 0 else "base (epoch 0)", by_epoch[0]))
    if best_epoch in by_epoch and best_epoch != 0:
        chosen.append((f"best (epoch {best_epoch})", by_epoch[best_epoch]))
    last = max(by_epoch)
    if last != best_epoch and last != 0:
        chosen.append((f"last (epoch {last})", by_epoch[last]))
    metrics = [m for m in HEADLINE if any(r.get(m) is not None for _, r in chosen)]
    body = [[metric, *(r.get(metric) for _, r in chosen)] for metric in metrics]
    return h.table(["metric", *(label for label, _ in chosen)], body, by_row=True)


def per_class_table(row: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> str:
    """AP (or mIoU) per class: base and tuned from ``evaluate`` when present, else ``row``
    (the best epoch's, or the last one's when the run did not record a best)."""
    if evaluation:
        tuned, base = evaluation["data"]["tuned"], evaluation["data"]["base"]
        for key in ("bbox_per_class_AP", "segm_per_class_AP", "per_class_mIoU"):
            if isinstance(tuned.get(key), dict):
                body = [[cls, (base.get(key) or {}).get(cls), value] for cls, value in tuned[key].items()]
                return f"<h4>{h.esc(key)} (evaluate)</h4>" + h.table(["class", "base", "tuned"], body)
    if not row:
        return ""
    for prefix in ("bbox_per_class_AP/", "segm_per_class_AP/", "per_class_mIoU/"):
        body = [[k[len(prefix):], v] for k, v in row.items() if k.startswith(prefix)]
        if body:
            title = f"{prefix[:-1]} at epoch {row.get('epoch')}"
            return f"<h4>{h.esc(title)}</h4>" + h.table(["class", "value"], body)
    return ""


def evaluation_table(entry: dict[str, Any]) -> str:
    """Base vs tuned on ``--data`` (and retention on ``--reference``) from ``evaluate``."""
    tuned, base = entry["data"]["tuned"], entry["data"]["base"]
    metrics = [m for m in HEADLINE if isinstance(tuned.get(m), (int, float))] or [
        k for k, v in tuned.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    header = ["metric", "base", "tuned", "gain"]
    ref = entry.get("reference")
    if ref:
        header += ["ref base", "ref tuned", "retention"]
    body = []
    for m in metrics:
        b, t = base.get(m), tuned.get(m)
        values = [b, t] + ([ref["base"].get(m), ref["tuned"].get(m)] if ref else [])
        texts = format_column(values)
        places = decimals_for(values)
        both = isinstance(t, (int, float)) and isinstance(b, (int, float))
        gain = format_signed(t - b, places) if both else UNDEFINED
        row = [m, texts[0], texts[1], gain]
        if ref:
            rb, rt = values[2], values[3]
            row += [texts[2], texts[3], f"{100.0 * rt / rb:.0f}%" if rb and rt is not None else UNDEFINED]
        body.append(row)
    return "<h4>evaluate: base (adapter off) vs tuned</h4>" + h.table(header, body)


def base_kept_note(info: dict[str, Any]) -> str:
    """A warning line when training kept the base model (``base_kept`` in metadata.json)."""
    if not info.get("base_kept"):
        return ""
    return ('<p class="note"><strong>No epoch beat the base model (epoch 0): the base was kept as best.</strong> '
            "Fine-tuning did not improve the monitored metric on the validation set; the adapter "
            "is the untouched one and predicts as the base does.</p>")


def teacher_section(layout: ExperimentLayout, name: str, meta: dict[str, Any],
                    evaluation: dict[str, Any] | None) -> str:
    paths = ReportPaths(layout.teacher(name).dir)
    info = (meta.get("teachers") or {}).get(name) or {}
    rows = read_results_csv(paths.results_csv) if paths.results_csv.is_file() else []
    best_epoch = info.get("best_epoch")
    best_row = next((r for r in rows if r.get("epoch") == best_epoch), rows[-1] if rows else None)
    curves = read_json(paths.curves_json) or {}
    facts = [(k.replace("_", " "), info[k]) for k in ("parameters", "base_metric", "best_metric", "best_epoch",
                                                      "epochs_run", "stopped_early", "seconds", "images_per_second")
             if info.get(k) is not None]
    if "best_threshold" in curves:
        facts.append(("best confidence threshold (F1)", curves["best_threshold"]))
    parts = [f'<h2 id="teacher-{h.esc(name)}">{h.esc(name)}</h2>', h.key_values(facts) if facts else "",
             base_kept_note(info), "<h3>Metrics</h3>", epoch_table(rows, best_epoch)]
    entry = (evaluation or {}).get("teachers", {}).get(name)
    if entry:
        parts.append(evaluation_table(entry))
    parts.append(per_class_table(best_row, entry))
    parts.append("<h3>Training</h3>" + (h.figure(paths.results_png, "results.png: losses, lr, metrics per epoch")
                                        or '<p class="note">no results.png</p>'))
    pictures = "".join(h.figure(paths.curve(c), c.replace("_", " ")) for c in CURVE_PICTURES)
    if pictures:
        parts.append(f"<h3>Curves</h3>{pictures}")
    grids = prediction_figures(paths, GRID_TAGS, "on val")
    if grids:
        parts.append(f"<h3>Predictions</h3>{grids}")
    grids = prediction_figures(ReportPaths(layout.root / EVALUATION_PICTURES / name), ("base", "tuned"),
                               "teacherkit evaluate")
    if grids:
        parts.append(f"<h3>Predictions on the evaluated file: base vs tuned</h3>{grids}")
    return "\n".join(parts)


def prediction_figures(paths: ReportPaths, tags: tuple[str, ...], source: str) -> str:
    """The prediction grids of ``tags`` that exist, each captioned with where it comes from."""
    grids = ""
    for tag in tags:
        grid_info = read_json(paths.grid_info(tag)) or {}
        epoch = f", epoch {grid_info['epoch']}" if grid_info.get("epoch") is not None else ""
        grids += h.figure(paths.grid(tag), f"{tag} ({source}{epoch}): ground truth | predictions")
    return grids


def build_report(experiment: Path, evaluation: dict[str, Any] | None = None) -> str:
    """The report page of ``experiment``; ``evaluation`` is ``teacherkit evaluate --json``
    output (read from ``<experiment>/evaluation.json`` when not given)."""
    layout = ExperimentLayout(Path(experiment))
    meta = read_json(layout.metadata) or {}
    if evaluation is None:
        evaluation = read_json(layout.root / EVALUATION_FILE)
    names = list(dict.fromkeys([*(meta.get("teachers") or {}), *layout.teacher_names()]))
    sections = [overview_section(layout, meta), data_section(layout, meta), config_section(layout)]
    sections += [teacher_section(layout, name, meta, evaluation) for name in names]
    return h.page(f"teacherkit report: {layout.root.name}", sections)
