"""``teacherkit export``: adapter bundles, or merged full models ``from_pretrained`` loads."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_replace_dir, atomic_write_text, make_temp_dir
from teacherkit.errors import OutputExistsError, TeacherkitError, check_output_dir

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
    """Write one folder per teacher into ``output``; returns ``{teacher: folder}``.

    Every check comes first (the teachers are trained, ``output`` can be a folder, it is
    empty or ``overwrite`` is given); the teachers are then written into a staging folder
    next to ``output`` and moved in only when all are complete, so a failure (a full disk,
    a teacher that cannot merge) leaves ``output`` as it was. With ``overwrite`` only the
    teachers' own sub-folders are replaced; other files in ``output`` are not touched.

    :raises ExperimentError: a name in ``teachers`` is not a trained teacher of the experiment.
    :raises OutputError: ``output`` is a file or cannot be created.
    """
    output = Path(output)
    names = experiment.require_trained(teachers)
    check_output_dir(output, "--output")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    created = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    staging = make_temp_dir(output)
    try:
        for name in names:
            _export_one(experiment, name, staging / name, merge)
        output.mkdir(exist_ok=True)
        for name in names:
            atomic_replace_dir(staging / name, output / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # parents this call made, nearest first, when they hold nothing else
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: output / name for name in names}


def _export_one(experiment: Any, name: str, folder: Path, merge: bool) -> None:
    tdir = experiment.path / "teachers" / name
    folder.mkdir()
    architecture = None
    if merge:
        architecture = export_merged(experiment.teacher(name), folder, name=name)
    else:
        shutil.copytree(tdir / "adapter", folder / "adapter")
        if (tdir / "base").is_dir():
            shutil.copytree(tdir / "base", folder / "base")
    shutil.copy2(experiment.path / "teacher_config.yaml", folder / "teacher_config.yaml")
    shutil.copy2(experiment.path / "dataset_info.json", folder / "dataset_info.json")
    atomic_write_text(folder / "README.txt", _readme(name, architecture, experiment))


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
