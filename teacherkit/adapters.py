"""LoRA for any teacher: wrapping with peft, loading saved adapters with one set of
checks, scaling between base and tuned weights, the adapter metadata file and its
model card.

Both shipped teachers call these functions, and a third-party teacher gets LoRA the
same way::

    from teacherkit import adapters

    peft_model = adapters.wrap_with_lora(model, config.lora, target_modules=["q_proj", "v_proj"],
                                         modules_to_save=["head"], where="teachers.mine.lora")
    ...
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp))
        adapters.AdapterMeta(teacher="mine", tuning="lora", base=config.base).write(tmp)
    ...
    adapters.load_lora_weights(peft_model, directory)

Every weight a LoRA teacher trains is in peft's own files (``adapter_config.json``,
``adapter_model.safetensors``): LoRA matrices, and fully trained modules through peft's
``modules_to_save``. peft (and torch) are imported inside the functions.
"""

from __future__ import annotations

import json
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teacherkit.atomic import atomic_write_json, atomic_write_text
from teacherkit.errors import TeacherkitError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The one metadata file of every adapter folder teacherkit writes.
ADAPTER_META = "teacherkit_adapter.json"
META_FORMAT = 1
#: Names earlier versions used (the SAM plugin's), still read.
LEGACY_META_NAMES = ("teacherkit_sam.json",)
PEFT_CONFIG = "adapter_config.json"
#: The model card marks its metrics block so that it can be filled in after saving.
METRICS_START, METRICS_END = "<!-- metrics -->", "<!-- /metrics -->"


class AdapterError(TeacherkitError):
    """An adapter folder is missing, incomplete, or does not fit the loaded model; the
    message names the folder and what differs."""


# -- the metadata file ---------------------------------------------------------------------


@dataclass
class AdapterMeta:
    """What ``teacherkit_adapter.json`` holds, for every teacher.

    :param teacher: the teacher's name (``"grounding_dino"``).
    :param tuning: what trained: ``"lora"``, ``"full"`` or a teacher's finer name
        (``"decoder-only"``); loading refuses a folder of another tuning.
    :param base: the base weights it was trained on (``teachers.<name>.base``).
    :param lora: the LoRA settings (``r``, ``alpha``, ...) when LoRA trained.
    :param class_names: the classes, in class-index order, with their COCO ``category_ids``.
    :param extra: teacher-specific facts (input size, prompts).
    """

    teacher: str
    tuning: str
    base: str
    lora: dict[str, Any] | None = None
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = META_FORMAT

    def write(self, directory: Path) -> None:
        atomic_write_json(Path(directory) / ADAPTER_META, asdict(self), indent=2)

    @classmethod
    def read(cls, directory: Path, *, what: str = "teacherkit adapter") -> AdapterMeta:
        """Read the folder's metadata (also the layouts of earlier versions).

        :raises AdapterError: when the folder has none."""
        directory = Path(directory)
        for name in (ADAPTER_META, *LEGACY_META_NAMES):
            path = directory / name
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise AdapterError(f"{path}: cannot read the adapter metadata ({exc})") from exc
                return cls.from_dict(data)
        raise AdapterError(f"{directory}: not a {what} folder ({ADAPTER_META} is missing)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterMeta:
        data = dict(data)
        if "format" not in data:  # before format 1: "finetune" (dino) or "tuning" (sam), flat extras
            data["tuning"] = data.pop("tuning", None) or data.pop("finetune", "")
        known = {f.name for f in fields(cls)}
        extra = {**dict(data.get("extra") or {}), **{k: v for k, v in data.items() if k not in known}}
        values = {k: v for k, v in data.items() if k in known and k != "extra"}
        values.setdefault("teacher", "")
        values.setdefault("base", "")
        return cls(**values, extra=extra)

    def require(self, directory: Path, what: str, saved: Any, current: Any, hint: str) -> None:
        """Refuse a folder whose recorded ``what`` differs from the loading teacher's."""
        if saved != current:
            raise AdapterError(
                f"{directory}: adapter was trained with {what} {saved!r}, but the loaded teacher has "
                f"{what} {current!r}; {hint}"
            )


# -- wrapping ----------------------------------------------------------------------------------


def point_input_embeddings(model: Any, path: str) -> None:
    """Make ``model.get_input_embeddings()`` return the submodule at ``path``.

    peft asks every model for its input embeddings when it wraps or loads an adapter;
    some transformers models cannot answer (Grounding DINO's sit in a nested BERT, and
    transformers 5 raises ``NotImplementedError``). Only this instance changes, so the
    model's class, weights and ``save_pretrained`` output stay transformers' own.
    """
    model.get_submodule(path)  # fail here, naming the path, rather than inside peft

    def get_input_embeddings(self: Any) -> Any:
        return self.get_submodule(path)

    # bound per instance: copy.deepcopy rebinds it to the copy
    model.get_input_embeddings = types.MethodType(get_input_embeddings, model)


def lora_config(settings: Any, *, target_modules: Any, modules_to_save: list[str] | None = None) -> Any:
    """peft's ``LoraConfig`` from teacherkit's ``lora`` section (``r``, ``alpha``, ``dropout``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=target_modules, modules_to_save=modules_to_save or None, bias="none",
    )


def wrap_with_lora(model: Any, settings: Any, *, target_modules: Any, modules_to_save: list[str] | None = None,
                   input_embeddings: str | None = None, where: str = "lora.target_modules") -> Any:
    """Wrap ``model`` with LoRA adapters; returns the peft model to train.

    :param settings: the teacher's ``lora`` section (``r``, ``alpha``, ``dropout``).
    :param target_modules: peft's targets (module-name suffixes, or one regular expression).
    :param modules_to_save: modules trained fully and saved inside the adapter (peft
        matches them as name suffixes, so ``"head.0"`` also names ``"x.head.0"``).
    :param input_embeddings: the input-embedding module's path, for a model whose
        ``get_input_embeddings`` does not answer (see :func:`point_input_embeddings`).
    :param where: the config key named when no module matches.
    :raises ConfigError: when the targets match no module.
    """
    from peft import get_peft_model

    from teacherkit.config import ConfigError

    if input_embeddings is not None:
        point_input_embeddings(model, input_embeddings)
    config = lora_config(settings, target_modules=target_modules, modules_to_save=modules_to_save)
    try:
        with warnings.catch_warnings():
            # peft probes a transformers attribute that transformers 5 deprecated; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"{where} = {settings.target_modules!r}: {exc}") from exc
    retie_modules_to_save(peft_model)
    return peft_model


def retie_modules_to_save(model: Any) -> int:
    """Keep tied weights tied inside peft's ``modules_to_save``.

    peft gives every wrapped module its own trainable copy, also when several wrapped
    modules share their weights in the base model (Grounding DINO's box head is one
    module used by every decoder layer and tied to the decoder's refinement copy).
    Afterwards they would train apart; here the wrappers whose original modules share
    weights get one trainable copy again. Returns the number of wrappers re-pointed.
    """
    from peft.utils import ModulesToSaveWrapper

    first: dict[tuple[int, ...], Any] = {}
    count = 0
    for module in model.modules():
        if not isinstance(module, ModulesToSaveWrapper):
            continue
        key = tuple(id(p) for p in module.original_module.parameters())
        owner = first.setdefault(key, module)
        if owner is not module and key:
            for name in list(module.modules_to_save):
                module.modules_to_save[name] = owner.modules_to_save[name]
            count += 1
    return count


# -- loading -----------------------------------------------------------------------------------


#: adapter_config.json keys that must agree with the model an adapter is loaded into
CHECKED_KEYS = ("r", "lora_alpha", "target_modules", "modules_to_save")


def _comparable(value: Any) -> Any:
    return sorted(str(v) for v in value) if isinstance(value, (list, tuple, set, frozenset)) else value


def read_peft_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / PEFT_CONFIG
    if not path.is_file():
        raise AdapterError(f"{directory}: not a peft adapter folder ({PEFT_CONFIG} is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc})") from exc


def check_lora_fits(peft_model: Any, directory: Path, *, adapter_name: str = "default",
                    ignore: tuple[str, ...] = ()) -> None:
    """Refuse an adapter whose rank, alpha, targets or fully trained modules differ
    from the model's, naming each difference."""
    saved = read_peft_config(directory)
    mine = peft_model.peft_config[adapter_name]
    diffs = []
    for key in CHECKED_KEYS:
        if key in ignore:
            continue
        theirs, ours = _comparable(saved.get(key)), _comparable(getattr(mine, key, None))
        if theirs != ours:
            diffs.append(f"{key}={theirs!r} in the folder, {key}={ours!r} in the model")
    if diffs:
        raise AdapterError(
            f"{directory}: adapter does not fit the model: {'; '.join(diffs)}. Load it with the lora settings "
            "(and modes) it was trained with."
        )


def load_lora_weights(peft_model: Any, directory: Path, *, adapter_name: str = "default",
                      ignore: tuple[str, ...] = ()) -> None:
    """Load a saved adapter's weights into ``peft_model`` (built with the same settings).

    Checks, in order: the folder is a peft adapter; rank, alpha, targets and
    ``modules_to_save`` agree (:func:`check_lora_fits`); no LoRA or fully trained
    tensor of the model is missing from the file and the file has none the model lacks.

    :param ignore: ``adapter_config.json`` keys not compared (for a legacy layout the
        caller completes itself).
    :raises AdapterError: naming the folder and the mismatch.
    """
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    directory = Path(directory)
    check_lora_fits(peft_model, directory, adapter_name=adapter_name, ignore=ignore)
    try:
        weights = load_peft_weights(str(directory), device="cpu")
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{directory}: cannot read the adapter weights ({exc})") from exc
    if "modules_to_save" in ignore:
        # a layout without them: keep the model's own values, the caller fills them in
        from peft.utils import get_peft_model_state_dict

        current = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
        weights = {**{k: v for k, v in current.items() if "lora_" not in k}, **weights}
    result = set_peft_model_state_dict(peft_model, weights, adapter_name=adapter_name)
    wanted = ("lora_",) + (() if "modules_to_save" in ignore else ("modules_to_save",))
    missing = [k for k in result.missing_keys if any(w in k for w in wanted)]
    if missing or result.unexpected_keys:
        raise AdapterError(
            f"{directory}: adapter weights do not fit the model: missing {missing[:3]} "
            f"({len(missing)} in all), unexpected {list(result.unexpected_keys)[:3]} "
            f"({len(result.unexpected_keys)} in all)"
        )


# -- scaling -----------------------------------------------------------------------------------


class AdapterScale:
    """Blend a teacher between its base (0.0) and its fine-tuned weights (1.0).

    LoRA layers scale their update (peft's ``set_scale``). Fully trained weights move
    linearly from their base values to their tuned ones: for a module in peft's
    ``modules_to_save`` the base is peft's ``original_module``; for others (full
    fine-tuning, a module trained in place) ``base_values()`` supplies them by name,
    called once, when first needed. Scale 1 gives back the exact tuned values. For
    evaluation: set 1 again before training or saving.
    """

    def __init__(self, model: Any, base_values: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> None:
        self.model = model
        self.scale = 1.0
        self._base_values = base_values
        self._base: Mapping[str, torch.Tensor] | None = None
        self._tuned: dict[str, torch.Tensor] = {}

    def set(self, scale: float) -> None:
        scale = float(scale)
        if scale == self.scale:
            return
        self._scale_lora(scale)
        self._blend(scale)
        self.scale = scale

    def _scale_lora(self, scale: float) -> None:
        from peft.tuners.lora import LoraLayer

        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    module.set_scale(adapter, scale)

    def _trained(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad and "lora_" not in n}

    def _base_of(self, name: str, everything: dict[str, torch.Tensor]) -> torch.Tensor:
        if ".modules_to_save." in name:
            head, _, tail = name.partition(".modules_to_save.")
            original = f"{head}.original_module.{tail.partition('.')[2]}"
            return everything[original]
        if self._base is None:
            if self._base_values is None:
                raise TeacherkitError(f"adapter scale: no base value for {name}")
            self._base = self._base_values()
        return self._base[name]

    def _blend(self, scale: float) -> None:
        import torch

        params = self._trained()
        if not params:
            return
        if self.scale == 1.0:  # leaving the tuned weights: remember them exactly
            self._tuned = {n: p.detach().clone() for n, p in params.items()}
        everything = dict(self.model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name, param in params.items():
                tuned = self._tuned[name]
                if scale == 1.0:
                    param.copy_(tuned)
                else:
                    base = self._base_of(name, everything).to(param.device, param.dtype)
                    param.copy_(base + scale * (tuned - base))
        if scale == 1.0:
            self._tuned = {}


# -- the model card ----------------------------------------------------------------------------


def _metrics_block(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return f"{METRICS_START}\nNot recorded when this folder was written.\n{METRICS_END}"
    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items() if isinstance(v, (int, float, str))]
    return "\n".join([METRICS_START, "| metric | value |", "|---|---|", *rows, METRICS_END])


def write_model_card(directory: Path, meta: AdapterMeta, *, usage: str, title: str,
                     data: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None) -> None:
    """Write ``README.md`` (replacing peft's empty template): what the adapter is,
    its base, tuning, classes, data, metrics and how to load it.

    :param usage: Markdown with the loading code.
    :param data: facts about the training data (source file, image and annotation counts).
    """
    lines = [
        "---", "library_name: peft" if meta.lora else "library_name: transformers", f"base_model: {meta.base}",
        "tags: [teacherkit]", "---", "", f"# {title}", "",
        f"Trained with teacherkit (teacher `{meta.teacher}`, tuning `{meta.tuning}`) on the base `{meta.base}`.",
    ]
    if meta.lora:
        lines.append("LoRA: " + ", ".join(f"{k}={v}" for k, v in meta.lora.items()) + ".")
    if meta.class_names:
        pairs = ", ".join(f"{n} ({i})" for n, i in zip(meta.class_names, meta.category_ids, strict=False))
        lines += ["", "## Classes (COCO category id)", "", pairs or ", ".join(meta.class_names)]
    if data:
        lines += ["", "## Training data", "", *(f"- {k}: {v}" for k, v in data.items())]
    lines += ["", "## Metrics", "", _metrics_block(metrics), "", "## How to load", "", usage.strip(), ""]
    atomic_write_text(Path(directory) / "README.md", "\n".join(lines))


def record_metrics(directory: Path, metrics: Mapping[str, Any]) -> None:
    """Put ``metrics`` into the model card of a written adapter folder (the trainer
    knows them only after the adapter is saved)."""
    path = Path(directory) / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.find(METRICS_START), text.find(METRICS_END)
    if start < 0 or end < 0:
        raise AdapterError(f"{path}: no metrics block to fill (not a teacherkit model card)")
    atomic_write_text(path, text[:start] + _metrics_block(metrics) + text[end + len(METRICS_END):])
