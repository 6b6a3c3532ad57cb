"""The seed guide's API: a few lines each over the real machinery.

Code written against the project's first guide keeps running::

    info = inspect_dataset("train.json")            # or a COCO dict
    info["annotation_kinds"], info.annotation_kinds  # both work
    models = get_required_models(info)
    config = generate_config(default_config_path="defaults.yaml", dataset_info=info)
    batch = create_preprocessor_from_models(models).preprocess_batch(image)  # {name: (tensor, meta)}

Training-side pieces (``TrainingManager``, ``CheckpointManager``) are in
:mod:`teacherkit.seed_training`; docs/seed-api.md shows all of them. Nothing heavy is
imported at module level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teacherkit.config import ConfigError, LoraSettings
from teacherkit.data.info import DatasetInfo
from teacherkit.plugins import PluginError

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.config import RootConfig
    from teacherkit.data.coco import CocoDataset
    from teacherkit.plugins import PluginHost


def _host(host: PluginHost | None) -> PluginHost:
    from teacherkit.plugins import current_host

    return host if host is not None else current_host()


class DatasetReport(DatasetInfo):
    """A :class:`~teacherkit.data.info.DatasetInfo` that also reads like the seed's dict:
    ``info["annotation_kinds"]``, ``info.get("num_classes")``, ``"has_masks" in info``."""

    def _as_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        data = self._as_dict()
        if key not in data:
            raise KeyError(f"{key!r}; dataset facts are: {', '.join(data)}")
        return data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_dict().get(key, default)

    def keys(self) -> list[str]:
        return list(self._as_dict())

    def __contains__(self, key: object) -> bool:
        return key in self._as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._as_dict())


def _load(data: CocoDataset | Mapping[str, Any] | str | Path) -> CocoDataset:
    from teacherkit.data.coco import CocoDataset, load_coco

    if isinstance(data, CocoDataset):
        return data
    if isinstance(data, Mapping):
        return CocoDataset.from_dict(dict(data))
    return load_coco(Path(data))


def inspect_dataset(data: CocoDataset | Mapping[str, Any] | str | Path, host: PluginHost | None = None
                    ) -> DatasetReport:
    """What a dataset holds (:func:`teacherkit.data.inspect.inspect_dataset`), from a
    COCO file path, a COCO dict or a loaded dataset."""
    from teacherkit.data.inspect import inspect_dataset as inspect_loaded

    info = inspect_loaded(_load(data), host=_host(host))
    return DatasetReport(**{name: getattr(info, name) for name in DatasetInfo.__dataclass_fields__})


def load_and_inspect_dataset(path: str | Path, host: PluginHost | None = None) -> tuple[CocoDataset, DatasetReport]:
    """``(loaded dataset, its report)`` of a COCO file."""
    dataset = _load(path)
    return dataset, inspect_dataset(dataset, host)


def get_required_models(info: DatasetInfo | Mapping[str, Any] | str | Path, host: PluginHost | None = None
                        ) -> list[str]:
    """Teachers whose annotation kind the data holds (``info`` may also be a path or a COCO dict)."""
    from teacherkit.data.inspect import get_required_models as required

    if not isinstance(info, DatasetInfo):
        info = inspect_dataset(info, host)
    return required(info, host=_host(host))


def generate_config(default_config_path: str | Path | None = None, dataset_info: DatasetInfo | None = None, *,
                    output_path: str | Path | None = None, preset: str | None = None,
                    host: PluginHost | None = None) -> RootConfig:
    """The resolved config: installed teachers' defaults, the dataset's facts, the preset,
    then the file at ``default_config_path``; saved as YAML to ``output_path`` when given."""
    from teacherkit.config import dataset_facts, resolve_config

    model = _host(host).config_model()
    facts = dataset_facts(dataset_info) if dataset_info is not None else None
    config_file = Path(default_config_path) if default_config_path is not None else None
    config = resolve_config(model, dataset_facts=facts, preset=preset, config_file=config_file)
    if output_path is not None:
        config.save(Path(output_path))
    return config


def load_seed_config(config_path: str | Path | None, host: PluginHost | None = None) -> RootConfig:
    """The config a seed-API object runs with: ``config_path`` layered over the defaults."""
    return generate_config(default_config_path=config_path, host=host)


_ONE_CLASS = DatasetInfo(annotation_kinds=["boxes"], categories=[{"id": 1, "name": "object"}],
                         class_names=["object"], class_mapping={1: 0})


class MultiPreprocessor:
    """The preprocessors of several teachers over one image (see
    :func:`create_preprocessor_from_models`)."""

    def __init__(self, preprocessors: Mapping[str, Any]) -> None:
        self.preprocessors = dict(preprocessors)

    def preprocess_batch(self, image: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
        """``{teacher: (pixel tensor (1, 3, H, W), the rest of its batch)}`` for one RGB
        image (an ``(H, W, 3)`` uint8 array, a PIL image or an image file path). The pixels
        are uint8, resized and padded, as workers ship them; the teacher's ``forward`` and
        ``predict`` normalise them on its device."""
        sample = _sample_of(image)
        out: dict[str, tuple[Any, dict[str, Any]]] = {}
        for name, pre in self.preprocessors.items():
            batch = pre.collate([pre(sample, train=False)])
            out[name] = (batch["pixel_values"], {k: v for k, v in batch.items() if k != "pixel_values"})
        return out


def _sample_of(image: Any) -> dict[str, Any]:
    import numpy as np

    if isinstance(image, (str, Path)):
        from teacherkit.data.samples import read_image

        pixels, file_name = read_image(Path(image)), str(image)
    else:
        pixels, file_name = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image), ""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ConfigError(f"preprocess_batch: expected an (H, W, 3) uint8 RGB image, got {pixels.dtype} "
                          f"{pixels.shape}")
    height, width = pixels.shape[:2]
    empty = np.zeros(0, np.int64)
    # an image with no instances: every field a preprocessor may read, empty
    return {"image": pixels, "image_id": 0, "file_name": file_name, "orig_size": (height, width),
            "boxes": np.zeros((0, 4), np.float32), "labels": empty, "category_ids": empty, "annotation_ids": empty,
            "iscrowd": empty, "masks": np.zeros((0, height, width), np.uint8),
            "keypoints": np.zeros((0, 0, 3), np.float32), "extra": {}}


def create_preprocessor_from_models(models: Sequence[str], config: RootConfig | None = None, *,
                                    dataset_info: DatasetInfo | None = None,
                                    host: PluginHost | None = None) -> MultiPreprocessor:
    """Build each named teacher (its section of ``config``, default: the resolved default
    config, whose bases are the real pretrained models) and its preprocessor, through the
    same hooks training uses."""
    host = _host(host)
    config = config if config is not None else generate_config(host=host)
    info = dataset_info if dataset_info is not None else _ONE_CLASS
    preprocessors = {}
    for name in models:
        spec = host.teacher(name)
        section = config.teacher(name)
        teacher = host.load_model(spec, section, info, None)
        preprocessors[name] = host.make_preprocessor(spec, section, teacher)
    return MultiPreprocessor(preprocessors)


def get_augmentation_registry(host: PluginHost | None = None) -> Any:
    """The registry of the augmentation plugin (``teacherkit-augment``) over every
    characteristic the installed plugins contribute."""
    try:
        from teacherkit_augment.registry import get_augmentation_registry as registry
    except ImportError as exc:
        raise PluginError("get_augmentation_registry needs the augmentation plugin: pip install "
                          "teacherkit-augment") from exc
    return registry(_host(host))


#: peft's ``LoraConfig`` names → teacherkit's ``lora`` section names.
PEFT_LORA_KEYS = {"r": "r", "lora_alpha": "alpha", "alpha": "alpha", "lora_dropout": "dropout",
                  "dropout": "dropout", "target_modules": "target_modules"}


def lora_settings(lora_config: LoraSettings | Mapping[str, Any] | None) -> LoraSettings:
    """A :class:`~teacherkit.config.LoraSettings` from ours or peft's key names
    (``{"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}``)."""
    if lora_config is None or isinstance(lora_config, LoraSettings):
        return lora_config or LoraSettings()
    unknown = sorted(set(lora_config) - set(PEFT_LORA_KEYS))
    if unknown:
        raise ConfigError(f"lora_config: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(PEFT_LORA_KEYS)}")
    return LoraSettings(**{PEFT_LORA_KEYS[key]: value for key, value in lora_config.items()})


def load_grounding_dino_with_lora(base_checkpoint: str = "tiny", num_classes: int = 1,
                                  lora_config: LoraSettings | Mapping[str, Any] | None = None,
                                  **kwargs: Any) -> Any:
    """Grounding DINO with LoRA applied (``teacherkit_dino.load_grounding_dino_with_lora``),
    accepting peft's LoRA key names. Needs ``teacherkit-dino``."""
    try:
        from teacherkit_dino.api import load_grounding_dino_with_lora as load
    except ImportError as exc:
        raise PluginError("load_grounding_dino_with_lora needs the Grounding DINO plugin: pip install "
                          "teacherkit-dino") from exc
    return load(base_checkpoint, num_classes, lora_settings(lora_config), **kwargs)
