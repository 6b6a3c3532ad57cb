"""``teacherkit train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# options whose declaration does not fit on one line
_Images = Annotated[Path | None, typer.Option("--images", help="Image folder (default: the training JSON's folder).")]
_Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set training.lr=3e-4.")]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue the experiment in --output where it stopped.")]
_Replay = Annotated[
    Path | None, typer.Option("--replay", help="Source-domain COCO JSON mixed into every epoch (training.replay.data).")
]
_ReplayFraction = Annotated[
    float | None, typer.Option("--replay-fraction", help="Replay images per epoch as a fraction of the training "
                               "images (training.replay.fraction).")
]

_BatchSize = Annotated[str | None, typer.Option(
    "--batch-size", help="training.batch_size: images per step, or 'auto' (the largest that fits, per teacher).")]
_ScaleLr = Annotated[bool, typer.Option("--scale-lr", help="Scale --lr linearly with the batch (training.scale_lr).")]


def train_command(
    data: Annotated[Path, typer.Option("--data", help="Training COCO JSON.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Experiment folder to create (default: a new runs/train/exp<N>).")] = None,
    val: Annotated[Path | None, typer.Option("--val", help="Validation COCO JSON, evaluated every epoch.")] = None,
    images: _Images = None,
    val_images: Annotated[
        Path | None,
        typer.Option("--val-images", help="Validation image folder (default: --images, else --val's folder)."),
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML config layered over the defaults.")] = None,
    sets: _Sets = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated teachers to train (narrows what the data allows).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="training.epochs")] = None,
    batch_size: _BatchSize = None,
    scale_lr: _ScaleLr = False,
    lr: Annotated[float | None, typer.Option("--lr", help="training.lr")] = None,
    lora_r: Annotated[
        int | None, typer.Option("--lora-r", help="LoRA rank of every teacher that fine-tunes with LoRA.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="'tiny': small random models for trying the pipeline.")
    ] = None,
    resume: _Resume = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing experiment in --output.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (training.device).")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="training.num_workers")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="training.seed")] = None,
    replay: _Replay = None,
    replay_fraction: _ReplayFraction = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")] = False,
) -> None:
    """Inspect the data, train every teacher it can train, evaluate each epoch, keep the best."""
    from teacherkit.cli import fail, get_host
    from teacherkit.run_folders import output_or_run_dir
    from teacherkit.training.preflight import check_flag_ranges

    check_output_flags(output, resume=resume, overwrite=overwrite)
    size = batch_size_flag(batch_size)
    check_flag_ranges({"--epochs": epochs, "--batch-size": None if size == "auto" else size, "--lr": lr,
                       "--num-workers": num_workers, "--seed": seed, "--replay-fraction": replay_fraction,
                       "--lora-r": lora_r})
    host, config = get_host(), None
    training = _given(epochs=epochs, batch_size=size, lr=lr, device=device, num_workers=num_workers, seed=seed,
                      scale_lr=True if scale_lr else None,
                      replay=_given(data=str(replay) if replay is not None else None, fraction=replay_fraction))
    layers = {"training": training, "lora_r": lora_r, "preset": preset, "config_file": config_file,
              "sets": sets or []}
    if not resume:
        config = resolve_train_config(host.config_model(), **layers)
    elif training or lora_r is not None or sets or config_file or preset:
        check_resumed_flags(host.config_model(), output, layers)
    for path, flag in ((data, "--data"), (val, "--val"), (replay, "--replay")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: file not found")
    with output_or_run_dir(output, "train") as folder:
        _run(data, val, images, folder, config, val_images=val_images, resume=resume, overwrite=overwrite,
             quiet=quiet, host=host, models=[m.strip() for m in models.split(",") if m.strip()] if models else None)


def check_output_flags(output: Path | None, *, resume: bool, overwrite: bool) -> None:
    """``--resume`` and ``--overwrite`` exclude each other, and both need ``--output``."""
    from teacherkit.cli import fail

    if resume and overwrite:
        fail("--resume and --overwrite cannot be combined")
    if output is None and (resume or overwrite):
        fail(f"--{'resume' if resume else 'overwrite'} needs --output: the experiment folder to "
             f"{'continue' if resume else 'replace'}")


def check_resumed_flags(model: Any, output: Path, layers: dict[str, Any]) -> None:
    """Config flags repeated with ``--resume`` (the command a user re-runs with ``--resume``
    added) are accepted when they resolve to the saved config: they are applied over it and
    every key that would change is named, with the recorded and the given value."""
    from teacherkit.config import load_config_yaml
    from teacherkit.layout import ExperimentLayout
    from teacherkit.training.preflight import resumed_config_difference

    saved_path = ExperimentLayout(output).config
    if not saved_path.is_file():
        return  # not an experiment: the trainer says so
    saved = load_config_yaml(model, saved_path)
    if layers["training"].get("batch_size") == "auto" and saved.training.batch_size == "auto":
        # the search ran when the run started and recorded its sizes per teacher: repeating
        # --batch-size auto asks for what was saved, not for clearing those sizes
        layers = {**layers, "training": {k: v for k, v in layers["training"].items() if k != "batch_size"}}
    given = resolve_train_config(model, saved=saved.model_dump(mode="json"), **layers)
    diff = resumed_config_difference(saved, given)
    if diff:
        from teacherkit.config import ConfigError

        raise ConfigError(f"--resume continues {saved_path}; the flags given change it:\n  " + "\n  ".join(diff)
                          + "\ndrop those flags to continue as saved, or start a new --output")


def batch_size_flag(value: str | None) -> int | str | None:
    """``--batch-size``: a whole number (its range is checked with the other flags) or ``auto``."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        return int(value)
    except ValueError:
        from teacherkit.errors import TeacherkitError

        raise TeacherkitError(f"--batch-size {value}: expected a whole number of images or 'auto'") from None


def _given(**values: Any) -> dict[str, Any]:
    """The values a flag was given for (empty sections dropped)."""
    return {k: v for k, v in values.items() if v is not None and v != {}}


def _run(data: Path, val: Path | None, images: Path | None, output: Path, config: Any, **kwargs: Any) -> None:
    from teacherkit.training.loop import Interrupted
    from teacherkit.training.trainer import TeacherTrainer

    val_images = kwargs.pop("val_images")
    trainer = TeacherTrainer(data, val, images, output, config, val_image_dir=val_images, **kwargs)
    try:
        trainer.train()
    except Interrupted as exc:  # 130 after SIGINT, 143 after SIGTERM
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc


#: ``training`` keys a teacher section may override for itself (``teachers.<name>.epochs``).
PER_TEACHER_KEYS = ("epochs", "batch_size", "lr")


def flags_layer(model: Any, training: dict[str, Any]) -> dict[str, Any]:
    """The command-line layer of the ``training`` flags. A flag the user typed beats a
    per-teacher value of a lower layer: for each of :data:`PER_TEACHER_KEYS` given, every
    teacher section gets a null for it (null: use ``training.<key>``); ``--set
    teachers.<name>.<key>=...`` is above the flags and still wins."""
    if not training:
        return {}
    layer: dict[str, Any] = {"training": dict(training)}
    reset = {key: None for key in PER_TEACHER_KEYS if key in training}
    if reset:
        names = list(model.model_fields["teachers"].annotation.model_fields)
        layer["teachers"] = {name: dict(reset) for name in names}
    return layer


def resolve_train_config(model: Any, *, training: dict[str, Any], lora_r: int | None, preset: str | None,
                         config_file: Path | None, sets: list[str], saved: dict[str, Any] | None = None) -> Any:
    """The config of ``teacherkit train``: defaults, preset, ``--config``, the flags, ``--set``
    (over a ``saved`` config first, when given: ``--resume``).

    ``--lora-r`` is a flag too: it sets ``lora.r`` of the teachers that fine-tune with LoRA
    once every layer is applied (``finetune: lora``), and of no other; ``--set`` beats it."""
    from teacherkit.config import resolve_config

    layers = {"preset": preset, "config_file": config_file, "sets": sets, "saved": saved}
    cli = flags_layer(model, training)
    config = resolve_config(model, cli=cli, **layers)
    if lora_r is None:
        return config
    names = [name for name in model.model_fields["teachers"].annotation.model_fields
             if getattr(config.teacher(name), "finetune", None) == "lora" and hasattr(config.teacher(name), "lora")]
    if not names:
        # print, not typer.echo: click caches the stderr stream it first saw, which in-process
        # callers (tests, the Python API) may have replaced since
        print("warning: --lora-r: no teacher fine-tunes with LoRA in this config; the flag changes nothing",
              file=sys.stderr, flush=True)
        return config
    teachers = cli.setdefault("teachers", {})
    for name in names:
        teachers.setdefault(name, {})["lora"] = {"r": lora_r}
    return resolve_config(model, cli=cli, **layers)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
