"""``teacherkit train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def train_command(
    data: Annotated[Path, typer.Option("--data", help="Training COCO JSON.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Experiment folder to create.")],
    val: Annotated[Path | None, typer.Option("--val", help="Validation COCO JSON, evaluated every epoch.")] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Image folder (default: the training JSON's folder).")
    ] = None,
    val_images: Annotated[
        Path | None,
        typer.Option("--val-images", help="Validation image folder (default: --images, else --val's folder)."),
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML config layered over the defaults.")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: --set training.lr=3e-4.")
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated teachers to train (narrows what the data allows).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="training.epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="training.batch_size")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="training.lr")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank of every teacher.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="'tiny': small random models for trying the pipeline.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the experiment in --output where it stopped.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing experiment in --output.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (training.device).")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="training.num_workers")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="training.seed")] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", help="Source-domain COCO JSON mixed into every epoch (training.replay.data)."),
    ] = None,
    replay_fraction: Annotated[
        float | None, typer.Option("--replay-fraction", help="Replay images per epoch as a fraction of the training "
                                   "images (training.replay.fraction).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")] = False,
) -> None:
    """Inspect the data, train every teacher it can train, evaluate each epoch, keep the best."""
    from teacherkit.cli import fail, get_host
    from teacherkit.config import resolve_config
    from teacherkit.training.loop import Interrupted
    from teacherkit.training.trainer import TeacherTrainer

    if resume and overwrite:
        fail("--resume and --overwrite cannot be combined")
    host = get_host()
    model = host.config_model()
    cli: dict[str, Any] = {}
    training = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device,
                                  "num_workers": num_workers, "seed": seed}.items() if v is not None}
    replay_cli = {k: v for k, v in {"data": str(replay) if replay is not None else None,
                                    "fraction": replay_fraction}.items() if v is not None}
    if replay_cli:
        training["replay"] = replay_cli
    if training:
        cli["training"] = training
    if lora_r is not None:
        cli["teachers"] = {name: {"lora": {"r": lora_r}} for name in host.teachers()}
    if resume:
        if cli or sets or config_file or preset:
            fail("--resume continues the saved teacher_config.yaml; drop the config flags (or start a new --output)")
        config = None
    else:
        config = resolve_config(model, preset=preset, config_file=config_file, cli=cli, sets=sets or [])
    for path, flag in ((data, "--data"), (val, "--val"), (replay, "--replay")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: file not found")
    trainer = TeacherTrainer(
        data, val, images, output, config, val_image_dir=val_images,
        models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        resume=resume, overwrite=overwrite, quiet=quiet, host=host,
    )
    try:
        trainer.train()
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(130) from exc


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
