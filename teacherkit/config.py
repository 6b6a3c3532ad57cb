"""Configuration: pydantic models, layering, ``--set`` overrides and YAML round trips.

Layers, lowest first: plugin defaults (each teacher's config model) → facts from the
dataset → a preset → ``--config file.yaml`` → CLI flags and ``--set a.b=value``.
Every field has a default and a description, so ``teacherkit config show`` and the docs
can be generated from the models.

Every float anywhere in the config must be finite: ``inf``/``nan`` would train and
write NaN weights.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from teacherkit.atomic import atomic_write_text
from teacherkit.errors import TeacherkitError

#: Images per step, or ``"auto"``: the largest that fits, searched for (training/batch_size.py).
BatchSize = Annotated[int, Field(ge=1)] | Literal["auto"]


class ConfigError(TeacherkitError, ValueError):
    """A config problem a user can fix; the message names the key and the source."""


class _Section(BaseModel):
    # allow_inf_nan=False: refuse inf/nan where the value is read, naming its key
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraSettings(_Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module name patterns LoRA wraps; null uses the teacher's documented default.")


class TeacherConfig(_Section):
    """Fields every teacher section has. Plugins subclass this for their own section."""

    enabled: bool = Field(True, description="Train this teacher when the data allows it.")
    base: str = Field(
        "tiny",
        description="Base weights: a local directory, a hub id already in the local cache, or 'tiny' "
        "(the same architecture from a small config with random weights, for trying the pipeline).",
    )
    finetune: Literal["lora", "full"] = Field(
        "lora", description="'lora' trains adapters only; 'full' trains every weight (comparison, random bases).")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings.")
    epochs: int | None = Field(None, ge=1, description="Per-teacher epochs; null uses training.epochs.")
    batch_size: BatchSize | None = Field(None, description="Per-teacher batch size (or 'auto'); null uses "
                                         "training.batch_size. train records here the size 'auto' found.")
    lr: float | None = Field(None, gt=0, description="Per-teacher learning rate; null uses training.lr.")


class ExperimentConfig(_Section):
    name: str = Field("experiment", description="A name for the run, saved in metadata.json.")
    preset: Literal["tiny", "base"] | None = Field(
        None, description="'tiny' builds small random models and small images for trying the pipeline.")


class ReplayConfig(_Section):
    """Rehearsal: source-domain images mixed into every training epoch (see docs/data.md#replay)."""

    data: str | None = Field(
        None,
        description="COCO JSON of source-domain data (what the base was trained on, or pseudo-labels of it) "
        "mixed into every training epoch so the teacher keeps what it knew; null disables replay. Its "
        "categories are matched to the training file's by name.",
    )
    images: str | None = Field(None, description="Folder the replay file_name values are relative to; null: "
                               "the replay JSON's folder.")
    fraction: float = Field(
        0.5, gt=0, description="Replay images per epoch as a fraction of the training images (0.5: one replay "
        "image for every two training images), drawn afresh each epoch from the run's seed.",
    )


class TrainingConfig(_Section):
    epochs: int = Field(10, ge=1, description="Number of passes over the training set.")
    batch_size: BatchSize = Field(4, description="Images per step per process, or 'auto': for each teacher the "
                                  "largest batch that fits on the device, recorded as teachers.<name>.batch_size.")
    scale_lr: bool = Field(False, description="Scale lr linearly: lr x (batch_size x grad_accumulation x processes) "
                           "/ scale_lr_reference. Off: lr is used as given, whatever the batch.")
    scale_lr_reference: int = Field(4, ge=1, description="Images per update the lr was chosen for (scale_lr).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Fraction of all steps spent warming up linearly.")
    grad_accumulation: int = Field(1, ge=1, description="Steps whose gradients add up before an update.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this value; null disables.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="'auto' uses bf16 where the device supports it and nothing on CPU.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes.")
    seed: int = Field(42, description="Seed for python, numpy and torch; the same seed gives the same run.")
    trackers: list[str] = Field(default_factory=lambda: ["tensorboard"], description="Experiment trackers through "
                                "accelerate: tensorboard (logs/<teacher>/), wandb, mlflow, aim; [] turns them off.")
    max_nonfinite_steps: int = Field(
        10, ge=1, description="Consecutive non-finite losses (each step skipped) before training aborts.")
    log_every: int = Field(10, ge=1, description="Steps between TensorBoard scalar writes.")
    ddp_find_unused_parameters: bool = Field(
        True, description="Let DDP tolerate trainable parameters a step does not use (safe default with LoRA "
        "and optional heads); false saves a graph traversal per step when every parameter is used.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Rehearsal of source-domain data.")


class CheckpointConfig(_Section):
    monitor: str | None = Field(None, description="Metric that picks the best epoch; null uses the teacher's own.")
    mode: Literal["max", "min"] | None = Field(None, description="Whether the monitored metric should rise or fall.")
    patience: int | None = Field(
        None, ge=1, description="Epochs without improvement before stopping early; null never stops early.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    score_base: bool = Field(True, description="Score the base on the validation data as epoch 0, so a run that only "
                             "makes it worse keeps the base; false skips that pass and keeps the best trained epoch.")


class AugmentationConfig(_Section):
    enabled: bool = Field(True, description="Augment training images when an augmentation plugin is installed.")
    characteristics: list[str] = Field(
        default_factory=list, description="Object traits, e.g. ['changes_shape', 'reflective_surface'].")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Scene facts, e.g. {'lighting': 'variable', 'camera': 'fixed'}."
    )
    intensity: Literal["low", "medium", "high"] = Field("medium", description="How strong the transforms are.")


class DatasetFacts(_Section):
    """What the training data holds, recorded by ``teacherkit train`` in the saved
    ``teacher_config.yaml``. Informational: training fills it from the data it loads, so a
    value given in a config file is replaced by the data's own."""

    num_classes: int | None = Field(None, ge=0, description="Number of classes in the training data (written by "
                                    "train; informational).")
    class_names: list[str] = Field(default_factory=list, description="Class names in contiguous-index order "
                                   "(written by train; informational).")


class RootConfig(_Section):
    """Base of the resolved config; :func:`build_config_model` adds ``teachers``."""

    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    checkpointing: CheckpointConfig = Field(default_factory=CheckpointConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    dataset: DatasetFacts = Field(default_factory=DatasetFacts, description="Facts of the training data "
                                  "(written by train; informational).")

    def teacher(self, name: str) -> TeacherConfig:
        return getattr(self.teachers, name)  # type: ignore[attr-defined]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_yaml())


def build_config_model(teacher_sections: Mapping[str, type[BaseModel]]) -> type[RootConfig]:
    """The root config model for the installed teachers (one section each)."""
    for name, model in teacher_sections.items():
        if not (isinstance(model, type) and issubclass(model, TeacherConfig)):
            raise ConfigError(f"teacher {name!r}: its config_model must subclass teacherkit.config.TeacherConfig")
    fields = {name: (model, Field(default_factory=model)) for name, model in teacher_sections.items()}
    teachers = create_model("TeachersConfig", __base__=_Section, **fields)  # type: ignore[call-overload]
    return create_model(  # type: ignore[call-overload]
        "TeacherkitConfig", __base__=RootConfig, teachers=(teachers, Field(default_factory=teachers))
    )


# -- layering ------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def check_keys(model: type[BaseModel], data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first key ``model`` does not know, naming the
    closest valid keys."""
    if not isinstance(data, Mapping):
        return
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            valid = ", ".join(prefix + f for f in fields)
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint} (valid here: {valid})")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, Mapping):
            check_keys(annotation, value, source, prefix=dotted + ".")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_set(assignments: Iterable[str]) -> dict[str, Any]:
    """``["training.lr=3e-4", "teachers.sam.lora.r=8"]`` → a nested dict. Values are
    parsed as YAML scalars/lists (``true``, ``3``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse value: {exc}") from exc
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" as a string; people mean a number
            try:
                value = float(value) if _FLOAT_RE.fullmatch(value.strip()) else value
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def load_yaml_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def resolve_config(
    model: type[RootConfig],
    *,
    dataset_facts: Mapping[str, Any] | None = None,
    preset: str | None = None,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    saved: Mapping[str, Any] | None = None,
) -> RootConfig:
    """Build the resolved config from its layers (lowest first, see module docstring).

    :param saved: a resolved config saved earlier (``teacher_config.yaml``), placed right
        above the defaults: ``train --resume`` applies the flags a user repeats over it to
        see whether they change anything.
    :param dataset_facts: the lowest layer after the defaults (see :func:`dataset_facts`).
    :param cli: values of command-line flags, as a nested mapping (``{"training": {"epochs": 2}}``);
        ``teacherkit train`` builds it with :func:`teacherkit.training.commands.flags_layer`.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if saved:
        layers.append(("the saved config", saved))
    if dataset_facts:
        layers.append(("dataset facts", dataset_facts))
    file_data = load_yaml_file(config_file) if config_file else {}
    chosen_preset = preset or (file_data.get("experiment", {}) or {}).get("preset")
    if chosen_preset:
        layers.append((f"preset {chosen_preset!r}", preset_layer(model, chosen_preset)))
    if config_file:
        layers.append((str(config_file), file_data))
    if cli:
        layers.append(("command-line flags", cli))
    set_data = parse_set(sets)
    if set_data:
        layers.append(("--set", set_data))
    return validate_config(model, _merge(model, layers))


def _merge(model: type[RootConfig], layers: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for source, data in layers:
        check_keys(model, data, source)
        merged = deep_merge(merged, data)
    return merged


def validate_config(model: type[RootConfig], data: Mapping[str, Any]) -> RootConfig:
    """``model`` of ``data``; :class:`ConfigError` naming the key of an invalid value, also
    of a non-finite float that a plugin's own sub-model (not a ``_Section``) let through."""
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    bad = nonfinite_fields(config)
    if bad:
        key, value = bad[0]
        raise ConfigError(f"invalid configuration:\n  {key}: must be a finite number (got {value!r})")
    return config


def nonfinite_fields(value: Any, prefix: str = "") -> list[tuple[str, float]]:
    """``(dotted key, value)`` of every float in ``value`` (a model, mapping or list) that
    is infinite or NaN."""
    if isinstance(value, BaseModel):
        items: Iterable[tuple[Any, Any]] = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, float) and not math.isfinite(value):
        return [(prefix.rstrip("."), value)]
    else:
        return []
    out: list[tuple[str, float]] = []
    for key, item in items:
        out.extend(nonfinite_fields(item, f"{prefix}{key}."))
    return out


def dataset_facts(info: Any) -> dict[str, Any]:
    """The dataset-facts layer of ``info`` (a :class:`teacherkit.data.info.DatasetInfo`)."""
    return {"dataset": {"num_classes": int(info.num_classes), "class_names": list(info.class_names)}}


def with_dataset_facts(config: RootConfig, info: Any) -> RootConfig:
    """``config`` with its ``dataset`` section set from the data ``info`` describes."""
    return config.model_copy(update={"dataset": DatasetFacts(**dataset_facts(info)["dataset"])})


def preset_layer(model: type[RootConfig], preset: str) -> dict[str, Any]:
    if preset not in ("tiny", "base"):
        raise ConfigError(f"unknown preset {preset!r}; valid presets: tiny, base")
    layer: dict[str, Any] = {"experiment": {"preset": preset}}
    if preset == "tiny":
        teachers_model = model.model_fields["teachers"].annotation
        for name, field in teachers_model.model_fields.items():  # type: ignore[union-attr]
            extra = getattr(field.annotation, "tiny_preset", None)
            section: dict[str, Any] = {"base": "tiny"}
            if extra:
                section = deep_merge(section, extra)
            layer.setdefault("teachers", {})[name] = section
    return layer


def format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_config_yaml(model: type[RootConfig], path: Path) -> RootConfig:
    """Load a resolved config saved by :meth:`RootConfig.save`."""
    data = load_yaml_file(path)
    check_keys(model, data, str(path))
    try:
        return validate_config(model, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, description) of every field, recursively."""
    rows: list[tuple[str, str, Any, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_fields(annotation, prefix + name + "."))
            continue
        default = field.get_default(call_default_factory=True)
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append((prefix + name, type_name, default, field.description or ""))
    return rows
