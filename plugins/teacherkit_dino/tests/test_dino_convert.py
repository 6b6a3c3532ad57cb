"""IDEA-Research's original Grounding DINO checkpoints → transformers
``GroundingDinoForObjectDetection``, checked against the ORIGINAL implementation.

The reference is IDEA's own model code (the ``groundingdino`` package as ``rf-groundingdino``
ships it: the modules of ``groundingdino-py`` 0.4.0, pure Python, deformable attention in
its PyTorch fallback) built from its own config files with random weights. Its
``state_dict`` is saved as the original ``.pth``, converted with teacherkit, and logits and
boxes for a prompt are compared on the same input with a relative tolerance of 1e-4 in
float32: the largest difference must be at most 1e-4 times the largest magnitude
(:func:`assert_close_rel`).

Three things around the original are replaced, none of them part of the weights' path:
- ``torchvision`` and ``timm`` (imported at module level; neither imports beside this
  project's CPU torch build) by the few names the model code touches: ``box_area``, a
  version string, ``_is_tracing``, and timm's ``DropPath`` (identity: the models run in
  eval mode), ``to_2tuple``, ``trunc_normal_`` (:func:`original_groundingdino`);
- ``groundingdino.util.utils`` / ``.visualizer`` (addict, cv2, matplotlib; inference and
  plotting helpers the model class only names);
- ``BertModelWarper``, IDEA's re-implementation of ``BertModel.forward`` with transformers-4
  internals that transformers 5 removed (``get_extended_attention_mask``, ``get_head_mask``),
  by the same ``BertModel`` run through its own forward with the same 3-D attention mask
  (same submodules, so the same ``bert.*`` tensors).

The text encoder is a small BERT (the original's is BERT-base, whose weights need a
download) with the shipped tiny vocabulary, which keeps BERT's special ids.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import runpy
import sys
import types
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from teacherkit import hookimpl
from teacherkit.cli import run
from teacherkit.convert import MARKER, add_converter, converted_checkpoint
from teacherkit_dino.config import GroundingDinoConfig
from teacherkit_dino.convert import BERT_ENV, CONVERTER, DinoBaseError, check_base, pretrained_folder, text_config
from teacherkit_dino.convert_keys import (
    DROPPED,
    UNMATCHED,
    check_mapping,
    convert_state_dict,
    detect_variant,
    hf_config,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RELATIVE_TOLERANCE = 1e-4
VOCABULARY = Path(__file__).resolve().parents[3] / "examples" / "pretrained" / "grounding_dino"
PROMPT = "square . circle ."


# -- the original code ----------------------------------------------------------------------


def _stand_ins() -> dict[str, types.ModuleType]:
    torchvision = types.ModuleType("torchvision")
    torchvision.__version__ = "0.20.0"  # misc.py picks its code path by version
    torchvision._is_tracing = lambda: False
    ops, boxes = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.ops.boxes")
    boxes.nms = None  # post-processing only
    boxes.box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    models, model_utils = types.ModuleType("torchvision.models"), types.ModuleType("torchvision.models._utils")
    model_utils.IntermediateLayerGetter = None  # the ResNet backbones only
    torchvision.ops, ops.boxes, torchvision.models, models._utils = ops, boxes, models, model_utils

    class DropPath(torch.nn.Module):  # stochastic depth: the identity in eval mode
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()

        def forward(self, x):
            return x

    timm, timm_models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
    layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    timm.models, timm_models.layers = timm_models, layers
    helpers = {}
    for name, attr in (("groundingdino.util.utils", "get_phrases_from_posmap"),
                       ("groundingdino.util.visualizer", "COCOVisualizer")):
        helpers[name] = types.ModuleType(name)
        setattr(helpers[name], attr, None)
    return {"torchvision": torchvision, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
            "torchvision.models": models, "torchvision.models._utils": model_utils, "timm": timm,
            "timm.models": timm_models, "timm.models.layers": layers, **helpers}


def _bert_as_itself(bert_model):
    forward = bert_model.forward

    def run_bert(attention_mask=None, **inputs):
        # the original hands BERT a (batch, text, text) mask of which tokens see which;
        # transformers 5's BertModel takes it with a heads axis
        if attention_mask is not None and attention_mask.dim() == 3:
            attention_mask = attention_mask[:, None]
        return forward(attention_mask=attention_mask, **inputs)

    bert_model.forward = run_bert
    return bert_model


def original_groundingdino() -> types.ModuleType:
    """IDEA's ``groundingdino.models`` imported with the stand-ins above (removed from
    ``sys.modules`` again, so nothing else sees them)."""
    if "groundingdino.models" not in sys.modules:
        if importlib.util.find_spec("groundingdino") is None:
            pytest.skip("the original Grounding DINO code is not installed: pip install --no-deps rf-groundingdino")
        import transformers  # noqa: F401  (its torchvision check must see the real state first)

        stand_ins = {n: m for n, m in _stand_ins().items() if n.startswith("groundingdino")
                     or importlib.util.find_spec(n.split(".")[0]) is None}
        previous = {n: sys.modules.get(n) for n in stand_ins}
        sys.modules.update(stand_ins)
        try:
            import groundingdino.models
            import groundingdino.models.GroundingDINO.groundingdino as model_module
        finally:
            for name, module in previous.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        model_module.BertModelWarper = _bert_as_itself
    return sys.modules["groundingdino.models"]


def original_args(config: str, bert: str, **changes) -> Namespace:
    """The original's own config file (``GroundingDINO_SwinT_OGC`` / ``_SwinB_cfg``), with
    the BERT folder and ``changes``; gradient checkpointing off (no effect on weights)."""
    models = original_groundingdino()
    path = Path(models.__file__).parents[1] / "config" / f"GroundingDINO_{config}.py"
    values = {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}
    values.update(text_encoder_type=bert, use_checkpoint=False, use_transformer_ckpt=False, **changes)
    return Namespace(**values)


def build_original(args: Namespace, seed: int = 0) -> torch.nn.Module:
    """IDEA's ``GroundingDINO`` with random weights: its own init, then every parameter
    moved by N(0, 0.02), since the original starts the box head's last layer at zero and
    the fusion gates at 1e-4 (weights there would otherwise go untested)."""
    models = original_groundingdino()
    torch.manual_seed(seed)
    model = models.build_model(args).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT of width 64 with the shipped vocabulary (BERT's special ids)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert")
    tokenizer = AutoTokenizer.from_pretrained(VOCABULARY)
    torch.manual_seed(5)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def bert_env(small_bert, monkeypatch) -> Path:
    monkeypatch.setenv(BERT_ENV, str(small_bert))
    return small_bert


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= RELATIVE_TOLERANCE * scale, f"{what}: max |diff| {diff:.3g} > 1e-4 x {scale:.3g}"


def compare_with_original(original: torch.nn.Module, converted: Path) -> None:
    """Logits (over the prompt's tokens) and boxes of every query for one prompt on one
    224x256 image, from the original model and from the converted folder."""
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(converted, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
    image = torch.randn(1, 3, 224, 256, generator=torch.Generator().manual_seed(7))
    text = tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():
        expected = original(image, captions=[PROMPT])
        ours = model(pixel_values=image, pixel_mask=torch.ones(1, 224, 256, dtype=torch.long), **text)
    tokens = text["input_ids"].shape[1]
    assert_close_rel(ours.logits[..., :tokens], expected["pred_logits"][..., :tokens], "logits")
    assert_close_rel(ours.pred_boxes, expected["pred_boxes"], "boxes")


# -- against the original -------------------------------------------------------------------


def test_a_small_original_model_converts_to_the_same_function(bert_env, tmp_path):
    """The original Swin-T backbone, 2 encoder and 2 decoder layers, 30 queries."""
    original = build_original(original_args("SwinT_OGC", str(bert_env), enc_layers=2, dec_layers=2, num_queries=30))
    torch.save({"model": {f"module.{k}": v for k, v in original.state_dict().items()}}, tmp_path / "gd.pth")
    assert CONVERTER.convert(tmp_path / "gd.pth", tmp_path / "out") == "swin_t"
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).is_file(), name
    compare_with_original(original, tmp_path / "out")


@pytest.mark.slow
def test_swin_t_ogc_at_full_size_matches_the_original(cli, bert_env, tmp_path):
    """``GroundingDINO_SwinT_OGC`` as released (Swin-T, 6 + 6 layers, 900 queries; the
    text encoder the small BERT), through ``teacherkit convert``: about a minute on one CPU."""
    from transformers import GroundingDinoProcessor

    original = build_original(original_args("SwinT_OGC", str(bert_env)))
    torch.save({"model": original.state_dict()}, tmp_path / "groundingdino_swint_ogc.pth")
    out = tmp_path / "converted"
    assert cli(["convert", str(tmp_path / "groundingdino_swint_ogc.pth"), "--output", str(out)]) == 0
    processor = GroundingDinoProcessor.from_pretrained(out)
    assert processor.image_processor.size == {"shortest_edge": 800, "longest_edge": 1333}
    assert processor.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == [101, 102, 1012, 1029]
    compare_with_original(original, out)


@pytest.mark.parametrize(("config", "width", "depths", "heads", "window"), [
    ("SwinT_OGC", 96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    ("SwinB_cfg", 128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
])
def test_every_tensor_of_the_released_architectures_maps_with_its_shape(config, width, depths, heads, window,
                                                                        monkeypatch):
    """The released configs with BERT-base, on the meta device (shapes only): every
    original tensor lands on a transformers tensor of its shape, and only :data:`UNMATCHED`
    is left unset."""
    from transformers import BertConfig, BertModel, GroundingDinoForObjectDetection

    original_groundingdino()
    from groundingdino.util import get_tokenlizer

    # bert-base-uncased itself (a download) replaced by its architecture; the tokenizer is
    # only asked for the special ids
    monkeypatch.setattr(get_tokenlizer, "get_pretrained_language_model", lambda name: BertModel(BertConfig()))
    # built on the CPU: the original's Swin reads its drop-path rates with .item(), which
    # the meta device cannot answer
    state_dict = original_groundingdino().build_model(original_args(config, str(VOCABULARY))).state_dict()
    variant = detect_variant(state_dict, config)
    swin = (variant.swin_width, variant.depths, variant.swin_heads, variant.window_size)
    assert swin == (width, depths, heads, window)
    assert (variant.d_model, variant.encoder_layers, variant.decoder_layers, variant.num_queries) == (256, 6, 6, 900)
    bert = text_config(state_dict, None)
    assert (bert["hidden_size"], bert["num_attention_heads"], bert["vocab_size"]) == (768, 12, 30522)
    with torch.device("meta"):
        expected = GroundingDinoForObjectDetection(hf_config(variant, bert)).state_dict()
    converted = convert_state_dict(state_dict)
    check_mapping(converted, expected, config)
    assert set(expected) - set(converted) == set(UNMATCHED)
    left_out = {k for k in state_dict if not any(re.fullmatch(pattern, k) for pattern in DROPPED)}
    assert len(left_out) < len(state_dict) and "bert.pooler.dense.weight" not in left_out
    # each kept tensor's elements land somewhere (fused ones split in three), none twice
    assert sum(state_dict[k].numel() for k in left_out) == sum(v.numel() for v in converted.values())


# -- the command, the .pth base, the missing vocabulary -----------------------------------


def doc_snippet() -> str:
    text = (Path(__file__).resolve().parents[3] / "docs" / "teachers" / "grounding_dino.md").read_text("utf-8")
    section = text[text.index("### IDEA-Research's original checkpoints"):]
    return re.findall(r"```python\n(.*?)```", section[: section.index("\n## ")], flags=re.S)[0]


class ConvertersPlugin:
    """What the plugin's teacherkit_register_commands does, as a plain test plugin."""

    @hookimpl
    def teacherkit_register_commands(self, app):
        add_converter(app, CONVERTER)


@pytest.fixture
def cli(register_plugin, cli_host):
    register_plugin(ConvertersPlugin(), name="test-dino-converters")
    return run


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, small_bert) -> Path:
    """An original checkpoint: Swin-T, 1 encoder and 2 decoder layers, 10 queries (with one
    decoder layer transformers' tying of the per-layer box heads has nothing to tie)."""
    path = tmp_path_factory.mktemp("pth") / "groundingdino_small.pth"
    original = build_original(original_args("SwinT_OGC", str(small_bert), enc_layers=1, dec_layers=2, num_queries=10))
    torch.save({"model": original.state_dict()}, path)
    return path


@pytest.fixture
def no_bert(tmp_path, monkeypatch):
    """Neither $TEACHERKIT_BERT nor a Hugging Face cache with BERT."""
    monkeypatch.delenv(BERT_ENV, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))


def test_convert_command_writes_a_loadable_folder_and_refuses_what_it_cannot(cli, bert_env, small_checkpoint,
                                                                            tmp_path, capsys):
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    out = tmp_path / "converted"
    assert cli(["convert", str(small_checkpoint), "--output", str(out)]) == 0
    assert "grounding_dino swin_t" in capsys.readouterr().out and (out / MARKER).is_file()
    model = GroundingDinoForObjectDetection.from_pretrained(out)
    assert model.config.backbone_config.embed_dim == 96 and model.config.backbone_config.window_size == 7
    assert list(model.config.backbone_config.out_indices) == [2, 3, 4]
    assert model.config.architectures == ["GroundingDinoForObjectDetection"]
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("?") == 1029
    snippet = doc_snippet().replace('"grounding-dino-swint"', repr(str(out)))
    exec(snippet, namespace := {})  # the docs' loading snippet, as written
    assert namespace["processor"].tokenizer.convert_tokens_to_ids("[SEP]") == 102

    assert cli(["convert", str(small_checkpoint), "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    again = ["convert", str(small_checkpoint), "--output", str(out), "--overwrite", "--model", "grounding_dino"]
    assert cli(again) == 0

    torch.save({"model": {"backbone.0.patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
                          "bert.embeddings.word_embeddings.weight": torch.zeros(8, 4),
                          "transformer.level_embed": torch.zeros(4, 8)}}, tmp_path / "partial.pth")
    assert cli(["convert", str(tmp_path / "partial.pth"), "--output", str(tmp_path / "o2")]) == 2
    assert "not a complete Grounding DINO checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_without_a_bert_vocabulary_convert_says_so_and_a_pth_base_stops(cli, no_bert, small_checkpoint, tmp_path,
                                                                         capsys):
    out = tmp_path / "no-tokenizer"
    assert cli(["convert", str(small_checkpoint), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "converted without a tokenizer" in err and "bert-base-uncased" in err and BERT_ENV in err
    assert (out / "model.safetensors").is_file() and not (out / "tokenizer_config.json").exists()
    with pytest.raises(DinoBaseError, match=f"vocabulary is not, and none was found in .{BERT_ENV}"):
        check_base(GroundingDinoConfig(base=str(small_checkpoint)))


def test_a_vocabulary_with_other_special_ids_is_refused(tmp_path, monkeypatch, small_checkpoint):
    from transformers import BertTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "a"]))
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "wrong")
    monkeypatch.setenv(BERT_ENV, str(tmp_path / "wrong"))
    with pytest.raises(Exception, match="not the vocabulary of the checkpoint's BERT"):
        CONVERTER.convert(small_checkpoint, tmp_path / "out")


def test_a_pth_base_converts_once_keyed_by_its_hash_and_loads(bert_env, small_checkpoint, tmp_path, monkeypatch):
    from teacherkit_dino.modeling import load_pretrained

    monkeypatch.setenv("TEACHERKIT_CACHE", str(tmp_path / "cache"))
    config = GroundingDinoConfig(base=str(small_checkpoint))
    location = check_base(config)
    assert location.kind == "checkpoint" and not location.random_weights
    folder = pretrained_folder(config)
    assert folder.parent == tmp_path / "cache" / "converted" and folder.name.startswith("grounding_dino-")
    loaded = load_pretrained(config.base, folder=folder)
    assert loaded.tokenizer.convert_tokens_to_ids("[SEP]") == 102 and loaded.model.config.num_queries == 10

    calls = []
    counting = dataclasses.replace(CONVERTER, convert=lambda *a: calls.append(a) or "x")
    assert converted_checkpoint(small_checkpoint, counting) == folder and not calls
    assert pretrained_folder(config) == folder


def test_other_pth_files_are_not_a_grounding_dino_base(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(DinoBaseError, match="not a Grounding DINO checkpoint"):
        check_base(GroundingDinoConfig(base=str(tmp_path / "other.pth")))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DinoBaseError, match="cannot read as a PyTorch checkpoint"):
        check_base(GroundingDinoConfig(base=str(tmp_path / "broken.pth")))

