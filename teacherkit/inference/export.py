"""``teacherkit export``: adapter bundles, or merged full models ``from_pretrained`` loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_replace_dir, atomic_write_text
from teacherkit.errors import OutputExistsError, TeacherkitError

#: Files of a base folder that belong to its processor/tokenizer rather than its weights.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.txt", "added_tokens.json")


def export_experiment(experiment: Any, output: Path, *, merge: bool = False, overwrite: bool = False,
                      teachers: list[str] | None = None) -> dict[str, Path]:
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    output.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in teachers or experiment.teacher_names:
        final = output / name
        tmp = output / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tdir = experiment.path / "teachers" / name
        if merge:
            _export_merged(experiment, name, tmp)
        else:
            shutil.copytree(tdir / "adapter", tmp / "adapter")
            if (tdir / "base").is_dir():
                shutil.copytree(tdir / "base", tmp / "base")
        shutil.copy2(experiment.path / "teacher_config.yaml", tmp / "teacher_config.yaml")
        shutil.copy2(experiment.path / "dataset_info.json", tmp / "dataset_info.json")
        atomic_write_text(tmp / "README.txt", _readme(name, merge, experiment))
        atomic_replace_dir(tmp, final)
        written[name] = final
    return written


def _export_merged(experiment: Any, name: str, directory: Path) -> None:
    loaded = experiment.teacher(name)
    model = loaded.teacher.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # LoRA folded into the base weights
    if not hasattr(model, "save_pretrained"):
        raise TeacherkitError(f"{name}: its model ({type(model).__name__}) has no save_pretrained; export "
                              "--merge supports transformers models")
    model.to("cpu").save_pretrained(str(directory), safe_serialization=True)
    base = Path(loaded.config.base)
    if base.is_dir():
        for file in PROCESSOR_FILES:
            if (base / file).is_file():
                shutil.copy2(base / file, directory / file)


def _readme(name: str, merge: bool, experiment: Any) -> str:
    if merge:
        how = ("A full model with the fine-tuning merged in. Load it with transformers:\n"
               "    from transformers import AutoModel\n"
               f"    model = AutoModel.from_pretrained('{name}')\n")
    else:
        how = ("The PEFT adapter (adapter/) of the best epoch; base/ holds the base weights when they were\n"
               "generated (tiny preset). Load with teacherkit.inference.load_experiment or with peft:\n"
               "    from peft import PeftModel\n"
               "    model = PeftModel.from_pretrained(base_model, 'adapter')\n")
    classes = ", ".join(experiment.info.class_names)
    return f"teacherkit export of teacher '{name}' from {experiment.path}\nclasses: {classes}\n\n{how}"
