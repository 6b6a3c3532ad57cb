"""``teacherkit export``: adapter bundles, or merged full models ``from_pretrained`` loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_dir, atomic_write_text
from teacherkit.errors import OutputExistsError, TeacherkitError

#: Files of a base folder that belong to its processor/tokenizer rather than its weights.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.txt", "added_tokens.json")


#: What a transformers user loads each exported teacher with: (model class, Auto class).
TRANSFORMERS_CLASSES = {
    "GroundingDinoForObjectDetection": "AutoModelForZeroShotObjectDetection",
    "SamModel": "AutoModelForMaskGeneration",
}


def export_experiment(experiment: Any, output: Path, *, merge: bool = False, overwrite: bool = False,
                      teachers: list[str] | None = None) -> dict[str, Path]:
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    output.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in teachers or experiment.teacher_names:
        final = output / name
        tdir = experiment.path / "teachers" / name
        with atomic_dir(final) as tmp:
            architecture = None
            if merge:
                architecture = export_merged(experiment.teacher(name), tmp, name=name)
            else:
                shutil.copytree(tdir / "adapter", tmp / "adapter")
                if (tdir / "base").is_dir():
                    shutil.copytree(tdir / "base", tmp / "base")
            shutil.copy2(experiment.path / "teacher_config.yaml", tmp / "teacher_config.yaml")
            shutil.copy2(experiment.path / "dataset_info.json", tmp / "dataset_info.json")
            atomic_write_text(tmp / "README.txt", _readme(name, architecture, experiment))
        written[name] = final
    return written


def transformers_class(model: Any) -> str:
    """The name of the transformers class ``model`` is (or subclasses): what
    ``config.json``'s ``architectures`` must name for ``from_pretrained`` and the Auto
    classes to rebuild it without teacherkit."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformers.") and hasattr(cls, "config_class"):
            return cls.__name__
    return type(model).__name__


def export_merged(loaded: Any, directory: Path, *, name: str) -> str:
    """Write ``loaded``'s model with the fine-tuning merged in as a transformers folder
    (weights, ``config.json`` naming transformers' class, the processor at the size the
    teacher was trained at). Returns the class name."""
    model = loaded.teacher.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # LoRA folded into the base weights
    if not hasattr(model, "save_pretrained"):
        raise TeacherkitError(f"{name}: its model ({type(model).__name__}) has no save_pretrained; export "
                              "--merge supports transformers models")
    architecture = transformers_class(model)
    model.config.architectures = [architecture]
    model.to("cpu").save_pretrained(str(directory), safe_serialization=True)
    # save_pretrained writes the instance's class name; a teacher's subclass would not load elsewhere
    config_path = Path(directory) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["architectures"] = [architecture]
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if hasattr(loaded.teacher, "save_processor"):
        loaded.teacher.save_processor(directory)
    else:
        base = Path(loaded.config.base)
        for file in PROCESSOR_FILES if base.is_dir() else ():
            if (base / file).is_file():
                shutil.copy2(base / file, Path(directory) / file)
    return architecture


def _readme(name: str, architecture: str | None, experiment: Any) -> str:
    if architecture:
        auto = TRANSFORMERS_CLASSES.get(architecture)
        how = ("A full model with the fine-tuning merged in, and its processor (at the input size it was\n"
               "trained at). Load it with transformers:\n"
               f"    from transformers import {architecture}\n"
               f"    model = {architecture}.from_pretrained('{name}')\n")
        if auto:
            how += (f"or with the Auto class:\n    from transformers import {auto}\n"
                    f"    model = {auto}.from_pretrained('{name}')\n")
        how += f"    from transformers import AutoProcessor\n    processor = AutoProcessor.from_pretrained('{name}')\n"
    else:
        how = ("The PEFT adapter (adapter/) of the best epoch; base/ holds the base weights when they were\n"
               "generated (tiny preset). Load with teacherkit.inference.load_experiment or with peft\n"
               "(adapter/README.md shows the code for this teacher):\n"
               "    from peft import PeftModel\n"
               "    model = PeftModel.from_pretrained(base_model, 'adapter')\n")
    classes = ", ".join(experiment.info.class_names)
    return f"teacherkit export of teacher '{name}' from {experiment.path}\nclasses: {classes}\n\n{how}"
