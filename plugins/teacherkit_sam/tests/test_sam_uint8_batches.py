"""Workers ship uint8 pixels; the teacher normalises them on the batch's device.

The oracle is the former worker-side float path (``sam_reference.reference_pixels``:
resize the uint8 image, ``(x - 255 mean) / (255 std)`` in float32, zero padding). The
device-side normalisation does the same float32 operations, so the encoder input is the
same bits and so are the model's outputs (tolerance 0 on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_reference import reference_pixels

from teacherkit.device_pixels import channel_constants as _scaled_constants
from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.preprocess import finish_pixels

TINY = {"image_size": 64}


def _float_batch(pre, samples, batch):
    """The batch as the former preprocessor shipped it: float32 normalised pixels."""
    pixels = [reference_pixels(pre, np.asarray(s["image"]), tuple(size))
              for s, size in zip(samples, batch["resized_sizes"])]
    return {**batch, "pixel_values": torch.from_numpy(np.stack(pixels))}


def _batch(pre, samples, train=False):
    return pre.collate([pre({**s, "extra": {"seed": 1}}, train=train) for s in samples])


def test_items_and_batches_ship_uint8_pixels_and_masks(shapes_samples):
    teacher = load_sam_with_lora("tiny", **TINY)
    pre = teacher.make_preprocessor()
    item = pre(shapes_samples[0], train=True)
    assert item["pixel_values"].dtype == np.uint8 and item["pixel_values"].shape == (3, 64, 64)
    assert item["targets"].dtype == np.uint8
    batch = _batch(pre, shapes_samples, train=True)
    b = len(shapes_samples)
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (b, 3, 64, 64)
    assert batch["target_masks"].dtype == torch.uint8 and batch["image_sizes"].dtype == torch.long
    # a quarter of the former float32 pixels' bytes
    assert batch["pixel_values"].nbytes * 4 == _float_batch(pre, shapes_samples, batch)["pixel_values"].nbytes
    # nothing per pixel travels as float (prompts are a few numbers per instance)
    assert not any(torch.is_tensor(v) and v.is_floating_point() and v.numel() >= 64 * 64 for v in batch.values())


def test_device_normalisation_equals_the_former_float_path(shapes_samples):
    teacher = load_sam_with_lora("tiny", **TINY)
    pre = teacher.make_preprocessor()
    batch = _batch(pre, shapes_samples)
    expected = _float_batch(pre, shapes_samples, batch)["pixel_values"]
    got = teacher.encoder_input(batch)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)  # bit for bit, padding included
    assert torch.equal(teacher.encoder_input(batch, torch.tensor([2, 0])), expected[[2, 0]])
    # the constants reach the device once, not with every batch (each copy would wait for it)
    hits = _scaled_constants.cache_info().hits
    teacher.encoder_input(batch)
    assert _scaled_constants.cache_info().hits == hits + 1
    # without image_sizes (a batch built before they existed) the host sizes do the same
    legacy = {k: v for k, v in batch.items() if k != "image_sizes"}
    assert torch.equal(teacher.encoder_input(legacy), expected)
    # in the encoder's dtype: the float32 values rounded once, as autocast would round them
    half = finish_pixels(batch["pixel_values"], batch["image_sizes"], pre.mean, pre.std, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, expected.to(torch.bfloat16))


@pytest.mark.parametrize("mode", ["lora", "frozen_encoder"])
def test_outputs_and_predictions_equal_the_float_path(shapes_samples, mode):
    teacher = load_sam_with_lora("tiny", mode=mode, cache_embeddings="off", **TINY)
    teacher.model.eval()
    pre = teacher.make_preprocessor()
    batch = _batch(pre, shapes_samples)
    float_batch = _float_batch(pre, shapes_samples, batch)
    with torch.no_grad():
        got, expected = teacher.forward(teacher.model, batch), teacher.forward(teacher.model, float_batch)
    for key in ("pred_masks", "iou_scores"):
        assert torch.equal(got[key], expected[key]), key
    assert teacher.predict(teacher.model, batch) == teacher.predict(teacher.model, float_batch)


def test_the_cache_hits_as_before_and_encodes_only_the_missing_images(shapes_samples):
    teacher = load_sam_with_lora("tiny", mode="frozen_encoder", cache_embeddings="memory", **TINY)
    pre = teacher.make_preprocessor()
    # the key of the encoder input is unchanged, so caches written before (on disk) still hit
    assert pre.preprocessing_id.startswith("sam-pre-v1|")
    encoded: list[torch.Tensor] = []
    teacher.sam.vision_encoder.register_forward_pre_hook(lambda _m, args: encoded.append(args[0].clone()))
    first = _batch(pre, shapes_samples[:2])
    teacher.forward(teacher.model, first)
    mixed = _batch(pre, [shapes_samples[2], shapes_samples[0]])
    teacher.forward(teacher.model, mixed)
    assert teacher.cache.stats() == {"hits": 1, "misses": 3, "entries": 3}
    assert [len(x) for x in encoded] == [2, 1]  # the cached image was neither normalised nor encoded
    expected = _float_batch(pre, [shapes_samples[2], shapes_samples[0]], mixed)["pixel_values"]
    assert torch.equal(encoded[1], expected[:1])
    with torch.no_grad():
        stored = teacher.sam.vision_encoder(expected[:1]).last_hidden_state[0]
    assert torch.equal(teacher.cache.get(mixed["cache_keys"][0]), stored)


def test_the_encoder_refuses_unnormalised_pixels(shapes_samples):
    teacher = load_sam_with_lora("tiny", mode="frozen_encoder", **TINY)
    pre = teacher.make_preprocessor()
    with pytest.raises(TypeError, match="encoder_input"):
        teacher._encode(_batch(pre, shapes_samples[:1])["pixel_values"])
