"""Workers ship uint8 pixels and each image's size; the teacher normalises and builds the
padding mask on the batch's device.

The oracle is the former worker-side float path (:func:`float_batch`: PIL's bilinear
resize of the uint8 image, ``(x / 255 - mean) / std`` in float32 numpy, zero padding, an
int64 ``pixel_mask``). The device side does the same float32 operations in the same
order, so the model sees the same bits and gives the same outputs (tolerance 0 on CPU)."""

from __future__ import annotations

import numpy as np
import torch
from dino_helpers import make_teacher, random_sample, shapes_info
from PIL import Image

from teacherkit.device_pixels import channel_constants as _normalisation_constants
from teacherkit_dino.preprocess import finish_batch, resize_size

SIZES = [(48, 64), (96, 40), (30, 90)]


def _samples() -> list[dict]:
    rng = np.random.default_rng(0)
    return [random_sample(rng, i + 1, [0, 2], size=size) for i, size in enumerate(SIZES)]


def float_batch(pre, samples, batch) -> dict:
    """The batch as the former preprocessor shipped it."""
    images = []
    for sample in samples:
        image = sample["image"]
        h, w = resize_size(*image.shape[:2], pre.shortest_edge, pre.longest_edge)
        pil = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR)
        array = np.asarray(pil, dtype=np.float32).transpose(2, 0, 1) / 255.0
        images.append((array - pre.image_mean) / pre.image_std)
    height, width = max(a.shape[1] for a in images), max(a.shape[2] for a in images)
    pixels = torch.zeros(len(images), 3, height, width)
    mask = torch.zeros(len(images), height, width, dtype=torch.long)
    for i, array in enumerate(images):
        pixels[i, :, : array.shape[1], : array.shape[2]] = torch.from_numpy(array)
        mask[i, : array.shape[1], : array.shape[2]] = 1
    rest = {k: v for k, v in batch.items() if k != "image_sizes"}
    return {**rest, "pixel_values": pixels, "pixel_mask": mask}


def test_batches_ship_uint8_pixels_and_sizes_not_float_pixels_and_masks():
    teacher = make_teacher(shapes_info())
    pre = teacher.make_preprocessor()
    samples = _samples()
    item = pre(samples[0], train=True)
    assert item["pixel_values"].dtype == torch.uint8 and item["pixel_values"].shape == (3, 64, 85)
    batch = pre.collate([pre(s, train=False) for s in samples])
    assert batch["pixel_values"].dtype == torch.uint8 and "pixel_mask" not in batch
    assert batch["image_sizes"].tolist() == [list(s) for s in batch["input_sizes"]]
    old = float_batch(pre, samples, batch)
    shipped = batch["pixel_values"].nbytes + batch["image_sizes"].nbytes
    before = old["pixel_values"].nbytes + old["pixel_mask"].nbytes
    b, _, h, w = batch["pixel_values"].shape
    assert shipped == b * (3 * h * w + 2 * 8)  # 3 bytes a pixel, was 3 x 4 + 8
    assert before == b * h * w * 20 and shipped * 6 < before


def test_device_side_finish_equals_the_former_float_path():
    teacher = make_teacher(shapes_info())
    pre = teacher.make_preprocessor()
    samples = _samples()
    batch = pre.collate([pre(s, train=False) for s in samples])
    old = float_batch(pre, samples, batch)
    done = teacher.finish_batch(batch)
    assert done["pixel_values"].dtype == torch.float32 and done["pixel_mask"].dtype == torch.long
    assert torch.equal(done["pixel_values"], old["pixel_values"])  # bit for bit, padding included
    assert torch.equal(done["pixel_mask"], old["pixel_mask"])
    assert teacher.finish_batch(done) is done  # finishing twice changes nothing
    # the constants reach the device once, not with every batch (each copy would wait for it)
    hits = _normalisation_constants.cache_info().hits
    teacher.finish_batch(batch)
    assert _normalisation_constants.cache_info().hits == hits + 1
    assert teacher.finish_batch(old) is old  # a float batch built by hand passes through
    # in the model's dtype: the float32 values rounded once, as autocast would round them
    half = finish_batch(batch, pre.image_mean, pre.image_std, torch.bfloat16)
    assert half["pixel_values"].dtype == torch.bfloat16
    assert torch.equal(half["pixel_values"], old["pixel_values"].to(torch.bfloat16))


def test_outputs_and_predictions_equal_the_float_path():
    teacher = make_teacher(shapes_info(), finetune="full", box_threshold=0.0, text_threshold=0.0, nms_iou=None)
    pre = teacher.make_preprocessor()
    samples = _samples()
    batch = pre.collate([pre(s, train=False) for s in samples])
    old = float_batch(pre, samples, batch)
    teacher.model.eval()
    with torch.no_grad():
        got, expected = teacher.forward(teacher.model, batch), teacher.forward(teacher.model, old)
    assert torch.equal(got["logits"], expected["logits"]) and torch.equal(got["pred_boxes"], expected["pred_boxes"])
    assert teacher.predict(teacher.model, batch) == teacher.predict(teacher.model, old)
