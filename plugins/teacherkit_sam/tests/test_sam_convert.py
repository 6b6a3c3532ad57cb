"""Meta's original SAM checkpoints → transformers ``SamModel``, checked against the
ORIGINAL implementation (the ``segment-anything`` package's modeling code).

The reference models are Meta's own classes with random weights; their ``state_dict`` is
saved as the original ``.pth`` and converted with teacherkit. Outputs are compared on the
same input with a relative tolerance of 1e-4 in float32: every tensor's largest
difference must be at most 1e-4 times its largest magnitude (:func:`assert_close_rel`).

``segment-anything`` imports torchvision for its predictor helpers only; the package's
``__init__`` is bypassed (:func:`original_sam`) so the modeling code imports without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from teacherkit import hookimpl
from teacherkit.cli import run
from teacherkit.convert import MARKER, add_converter, converted_checkpoint
from teacherkit_sam.convert import CONVERTER, check_mapping, convert_state_dict, detect_variant, hf_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RELATIVE_TOLERANCE = 1e-4


def original_sam() -> types.ModuleType:
    """``segment_anything`` with only its modeling code importable (no torchvision)."""
    package = sys.modules.get("segment_anything")
    if package is None:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None:
            pytest.skip("segment-anything (Meta's original SAM) is not installed: "
                        "pip install --no-deps segment-anything")
        package = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
        sys.modules["segment_anything"] = package
    importlib.import_module("segment_anything.build_sam")
    return package


def small_original(img_size: int = 256, seed: int = 0) -> torch.nn.Module:
    """Meta's ``Sam`` with a narrow 2-block encoder (one windowed, one global block) and the
    released prompt encoder and decoder, at a small input size; random weights, including
    the position tables Meta initialises at zero."""
    original_sam()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    grid = img_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=64, img_size=img_size, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    ).eval()
    randomise_zero_tables(sam)
    return sam


def randomise_zero_tables(sam: torch.nn.Module) -> None:
    # Meta starts pos_embed and the relative-position tables at zero (a checkpoint fills them);
    # zeros would leave their mapping untested
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                param.normal_(0, 0.02)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= RELATIVE_TOLERANCE * scale, f"{what}: max |diff| {diff:.3g} > 1e-4 x {scale:.3g}"


def compare_with_original(original: torch.nn.Module, converted: Path, size: int) -> None:
    """Image embeddings, then masks and IoU predictions for a point prompt (one positive, one
    negative) and a box prompt, from the original model and the converted one."""
    from transformers import SamModel

    model = SamModel.from_pretrained(converted, local_files_only=True).eval()
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_embeddings = original.image_encoder(image)
        assert_close_rel(model.get_image_embeddings(image), expected_embeddings, "image embeddings")
        s = size / 1024
        points = torch.tensor([[[300.0 * s, 400.0 * s], [600.0 * s, 500.0 * s]]])
        labels = torch.tensor([[1, 0]])
        box = torch.tensor([[100.0 * s, 150.0 * s, 700.0 * s, 800.0 * s]])
        for prompt, ours in (
            ({"points": (points, labels), "boxes": None},
             {"input_points": points[:, None], "input_labels": labels[:, None]}),
            ({"points": None, "boxes": box}, {"input_boxes": box[None]}),
        ):
            sparse, dense = original.prompt_encoder(masks=None, **prompt)
            masks, iou = original.mask_decoder(
                image_embeddings=expected_embeddings, image_pe=original.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            )
            out = model(image_embeddings=expected_embeddings, multimask_output=True, **ours)
            kind = "points" if prompt["points"] is not None else "box"
            assert_close_rel(out.pred_masks[:, 0], masks, f"{kind} masks")
            assert_close_rel(out.iou_scores[:, 0], iou, f"{kind} IoU predictions")


def test_small_original_model_converts_to_the_same_function(tmp_path):
    original = small_original()
    torch.save(original.state_dict(), tmp_path / "sam_small.pth")
    variant = CONVERTER.convert(tmp_path / "sam_small.pth", tmp_path / "out")
    assert variant == "vit_64"
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "processor_config.json").is_file()
    compare_with_original(original, tmp_path / "out", 256)


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_every_tensor_of_the_released_architectures_maps_with_its_shape(name):
    original_sam()
    from segment_anything.build_sam import sam_model_registry
    from transformers import SamModel

    with torch.device("meta"):  # shapes only: no memory, no init
        state_dict = sam_model_registry[name]().state_dict()
        variant = detect_variant(state_dict)
        expected = SamModel(hf_config(variant)).state_dict()
    assert variant.name == name and variant.image_size == 1024
    assert variant.global_attn_indexes == {"vit_b": (2, 5, 8, 11), "vit_l": (5, 11, 17, 23),
                                           "vit_h": (7, 15, 23, 31)}[name]
    check_mapping(convert_state_dict(state_dict), expected, name)


def threads_of_this_worker() -> int:
    """The CPUs this process may use (its affinity, capped by a cgroup CPU quota) shared among
    the pytest-xdist workers beside it: with more threads than cores, OpenMP's threads wait
    for the ones the kernel has parked, and the encoders run slower than on one thread."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    return max(1, cpus // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))


@contextlib.contextmanager
def large_blocks_from_the_heap() -> Iterator[None]:
    """glibc maps every block over its mmap threshold (at most 32 MiB) afresh and unmaps it on
    free, so each attention matrix of a 1024-px encoder (hundreds of MiB, made and freed in
    every block) is page-faulted in anew: about a third of this test's time, spent in the
    kernel. Here they come from the heap and freed ones are reused; afterwards the thresholds
    are set to the ceiling of glibc's sliding ones and the memory is handed back. Elsewhere
    than glibc nothing changes (the test is only slower)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD in malloc.h
    mallopt(mmap_threshold, 1 << 30)
    mallopt(trim_threshold, -1)  # never trim: the next block would fault the pages in again
    try:
        yield
    finally:
        mallopt(mmap_threshold, 32 << 20)
        mallopt(trim_threshold, 64 << 20)
        malloc_trim(0)


@pytest.mark.slow
def test_vit_b_at_full_size_matches_the_original(cli, tmp_path):
    """Meta's build_sam_vit_b (random weights) against its conversion on one 1024 image
    (about 40 s on one CPU thread, dominated by the two image encoders)."""
    original_sam()
    from segment_anything.build_sam import build_sam_vit_b

    torch.manual_seed(0)
    original = build_sam_vit_b().eval()
    randomise_zero_tables(original)
    torch.save(original.state_dict(), tmp_path / "sam_vit_b.pth")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_of_this_worker())
    try:
        assert cli(["convert", str(tmp_path / "sam_vit_b.pth"), "--output", str(tmp_path / "out")]) == 0
        with large_blocks_from_the_heap():
            compare_with_original(original, tmp_path / "out", 1024)
    finally:
        torch.set_num_threads(threads)


# -- the command and the cache ------------------------------------------------------------


class ConvertersPlugin:
    """What the SAM plugin's teacherkit_register_commands does, as a plain test plugin."""

    @hookimpl
    def teacherkit_register_commands(self, app):
        add_converter(app, CONVERTER)


@pytest.fixture
def cli(register_plugin, cli_host):
    register_plugin(ConvertersPlugin(), name="test-converters")
    return run


def test_convert_command_writes_a_folder_and_refuses_what_it_cannot(cli, tmp_path, capsys):
    torch.save(small_original().state_dict(), tmp_path / "sam.pth")
    out = tmp_path / "converted"
    assert cli(["convert", str(tmp_path / "sam.pth"), "--output", str(out)]) == 0
    assert "sam vit_64" in capsys.readouterr().out and (out / MARKER).is_file()
    from transformers import SamModel, SamProcessor

    assert SamModel.from_pretrained(out).config.vision_config.hidden_size == 64
    assert SamProcessor.from_pretrained(out).image_processor.size["longest_edge"] == 256

    assert cli(["convert", str(tmp_path / "sam.pth"), "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "sam.pth"), "--output", str(out), "--overwrite"]) == 0

    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    assert cli(["convert", str(tmp_path / "other.pth"), "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint teacherkit can convert" in err and "sam_vit_b/l/h" in err
    assert not (tmp_path / "o2").exists()
    assert cli(["convert", str(tmp_path / "sam.pth"), "--output", str(tmp_path / "o3"), "--model", "yolo"]) == 2
    assert "--model 'yolo'" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "o4")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_pth_base_converts_once_keyed_by_its_hash(tmp_path, monkeypatch):
    from teacherkit_sam import load_sam_with_lora

    monkeypatch.setenv("TEACHERKIT_CACHE", str(tmp_path / "cache"))
    original = small_original()
    torch.save(original.state_dict(), tmp_path / "sam.pth")
    teacher = load_sam_with_lora(str(tmp_path / "sam.pth"), image_size=256, attention="eager")
    folders = list((tmp_path / "cache" / "converted").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("sam-")
    stamp = (folders[0] / "model.safetensors").stat().st_mtime_ns
    assert teacher.settings.size == 256

    calls = []
    counting = dataclasses.replace(CONVERTER, convert=lambda *a: calls.append(a) or "x")
    assert converted_checkpoint(tmp_path / "sam.pth", counting) == folders[0] and not calls
    (tmp_path / "copy.pth").write_bytes((tmp_path / "sam.pth").read_bytes())  # same bytes, same folder
    assert converted_checkpoint(tmp_path / "copy.pth", counting) == folders[0] and not calls
    assert (folders[0] / "model.safetensors").stat().st_mtime_ns == stamp

    torch.save(small_original(seed=1).state_dict(), tmp_path / "sam.pth")  # new weights: converted anew
    load_sam_with_lora(str(tmp_path / "sam.pth"), image_size=256)
    assert len(list((tmp_path / "cache" / "converted").iterdir())) == 2

    with pytest.raises(Exception, match="image_size=1024 but the model .* takes 256 px"):
        load_sam_with_lora(str(tmp_path / "sam.pth"))
