"""The SAM loss against a plain reference written from its formula: one instance at a
time, a dense image-area mask, boolean choices on the host. The loss itself avoids all
three (index gathers, row/column contractions, a crop to the batch's image area), so
this pins that none of that changed a value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teacherkit_sam.loss import SamLoss
from teacherkit_sam.preprocess import SamPreprocessor


def reference_loss(logits, iou_pred, targets, valid, sizes, resolution="input", alpha=0.25, gamma=2.0,
                   weights=(20.0, 1.0, 1.0)):
    """focal + dice on the best candidate, MSE of its IoU prediction, averaged over instances."""
    size = targets.shape[-1]
    focal_best, dice_best, iou_best = [], [], []
    for i in range(logits.shape[0]):
        region = torch.zeros(size, size)
        region[: sizes[i][0], : sizes[i][1]] = 1.0
        for j in range(logits.shape[1]):
            if not valid[i, j]:
                continue
            lg = logits[i, j].float()[None]  # (1, C, h, w)
            t = targets[i, j].float()[None, None] / 255.0
            r = region[None, None]
            if resolution == "input":
                lg = F.interpolate(lg, size=(size, size), mode="bilinear", align_corners=False)
            else:
                t = F.interpolate(t, size=lg.shape[-2:], mode="area")
                r = F.interpolate(r, size=lg.shape[-2:], mode="area")
            lg, t, r = lg[0], t[0], r[0]  # (C, H, W), (1, H, W), (1, H, W)
            p = torch.sigmoid(lg)
            bce = F.softplus(lg) - t * lg  # -(t log p + (1 - t) log(1 - p))
            p_t = p * t + (1 - p) * (1 - t)
            a_t = alpha * t + (1 - alpha) * (1 - t)
            focal = (a_t * (1 - p_t) ** gamma * bce * r).sum(dim=(1, 2)) / r.sum().clamp_min(1.0)
            dice = 1 - (2 * (p * t * r).sum(dim=(1, 2)) + 1) / ((p * r).sum(dim=(1, 2)) + (t * r).sum() + 1)
            pb, tb = (lg > 0).float() * r, (t >= 0.5).float() * r
            inter = (pb * tb).sum(dim=(1, 2))
            union = pb.sum(dim=(1, 2)) + tb.sum(dim=(1, 2)) - inter
            iou = torch.tensor([float(a / b) if b > 0 else 1.0 for a, b in zip(inter, union)])
            best = int(torch.argmin(weights[0] * focal + weights[1] * dice))
            focal_best.append(focal[best])
            dice_best.append(dice[best])
            iou_best.append((iou_pred[i, j, best].float() - iou[best]) ** 2)
    focal, dice, iou = (torch.stack(v).mean() for v in (focal_best, dice_best, iou_best))
    return {"loss": weights[0] * focal + weights[1] * dice + weights[2] * iou, "focal": focal, "dice": dice,
            "iou": iou}


def _random_case(candidates: int, seed: int):
    """Three images (square, wide, tall) padded to 64², up to 3 instances each: soft
    targets, masks touching the image border and the square's edge, an empty mask, a
    padding slot, strong and weak logits."""
    g = torch.Generator().manual_seed(seed)
    size, low = 64, 16
    sizes = [(64, 64), (40, 64), (64, 24)]
    valid = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    targets = torch.zeros(3, 3, size, size, dtype=torch.uint8)
    targets[0, 0, 40:, 50:] = 255  # touches the square's bottom-right corner
    targets[0, 1] = torch.randint(0, 256, (size, size), generator=g, dtype=torch.uint8)  # soft everywhere
    # targets[0, 2] stays empty: an instance with an empty mask
    targets[1, 0, 30:40, 0:20] = 255  # touches the wide image's bottom edge and left side
    targets[1, 1, 0:5, 60:64] = 128  # a faint sliver in the top-right corner
    targets[2, 0, 10:50, 16:24] = 255  # touches the tall image's right edge
    targets[2, 1, 5:9, 5:9] = 255  # a padding slot with content: must not count
    logits = torch.randn(3, 3, candidates, low, low, generator=g) * 4
    iou_pred = torch.rand(3, 3, candidates, generator=g)
    return logits, iou_pred, targets, valid, sizes


def _collated(targets, valid, sizes):
    """The batch as SamPreprocessor.collate lays it out."""
    return {"target_masks": targets, "instance_valid": valid,
            "instance_index": torch.nonzero(valid.reshape(-1)).reshape(-1),
            "image_sizes": torch.tensor(sizes), "resized_sizes": sizes}


@pytest.mark.parametrize("resolution", ["input", "low_res"])
@pytest.mark.parametrize("candidates", [1, 3])
def test_loss_equals_the_reference_formula_with_the_same_gradients(resolution, candidates):
    for seed in range(3):
        logits, iou_pred, targets, valid, sizes = _random_case(candidates, seed)
        ours_in = logits.clone().requires_grad_(True)
        ref_in = logits.clone().requires_grad_(True)
        ours = SamLoss(resolution=resolution)({"pred_masks": ours_in, "iou_scores": iou_pred},
                                              _collated(targets, valid, sizes))
        ref = reference_loss(ref_in, iou_pred, targets, valid, sizes, resolution=resolution)
        for name in ("loss", "focal", "dice", "iou"):
            assert ours[name].item() == pytest.approx(ref[name].item(), rel=1e-5, abs=1e-6), name
        ours["loss"].backward()
        ref["loss"].backward()
        assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def test_an_older_batch_layout_with_a_dense_region_gives_the_same_loss():
    """Batches built without instance_index / image_sizes (a dense image_region mask
    and instance_valid only) are still scored identically."""
    logits, iou_pred, targets, valid, sizes = _random_case(1, 7)
    region = torch.zeros(3, 64, 64, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        region[i, :h, :w] = True
    outputs = {"pred_masks": logits, "iou_scores": iou_pred}
    new = SamLoss()(outputs, _collated(targets, valid, sizes))
    old = SamLoss()(outputs, {"target_masks": targets, "instance_valid": valid, "image_region": region})
    assert new["loss"].item() == pytest.approx(old["loss"].item(), rel=1e-6)


def test_collate_feeds_the_loss_what_it_reads():
    """instance_index and image_sizes from the real collate match instance_valid and
    the resized sizes (the loss relies on them instead of the region mask)."""
    import numpy as np

    pre = SamPreprocessor(image_size=64, max_instances=4)
    items = []
    for n, (height, width) in zip((2, 0, 1), ((60, 80), (64, 64), (80, 40))):
        masks = np.zeros((n, height, width), np.uint8)
        for k in range(n):
            masks[k, 5 * k : 5 * k + 20, 10:30] = 1
        boxes = np.array([[10, 5 * k, 20, 20] for k in range(n)], np.float32).reshape(-1, 4)
        items.append(pre({"image": np.zeros((height, width, 3), np.uint8), "masks": masks, "boxes": boxes,
                          "image_id": n, "extra": {"seed": n}}, train=True))
    batch = pre.collate(items)
    assert batch["instance_index"].tolist() == torch.nonzero(batch["instance_valid"].reshape(-1)).reshape(-1).tolist()
    assert batch["image_sizes"].tolist() == [list(s) for s in batch["resized_sizes"]] == [[48, 64], [64, 64], [64, 32]]
    logits = torch.randn(3, batch["input_boxes"].shape[1], 1, 16, 16)
    iou = torch.rand(3, batch["input_boxes"].shape[1], 1)
    ours = SamLoss()({"pred_masks": logits, "iou_scores": iou}, batch)
    ref = reference_loss(logits, iou, batch["target_masks"], batch["instance_valid"], batch["resized_sizes"])
    assert ours["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.5, 0.0), (0.3, 1.0), (0.9, 1.5), (0.1, 3.0)])
def test_other_focal_settings_match_the_reference_too(alpha, gamma):
    """The backward is written by hand: other alpha/gamma (gamma 0 has no modulating
    factor, gamma 1 a linear one) must still give the reference's values and gradients."""
    logits, iou_pred, targets, valid, sizes = _random_case(3, 11)
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = SamLoss(focal_alpha=alpha, focal_gamma=gamma)({"pred_masks": ours_in, "iou_scores": iou_pred},
                                                          _collated(targets, valid, sizes))
    ref = reference_loss(ref_in, iou_pred, targets, valid, sizes, alpha=alpha, gamma=gamma)
    assert ours["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)
    ours["loss"].backward()
    ref["loss"].backward()
    assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def test_chunked_per_pixel_terms_give_the_same_loss_and_gradients(monkeypatch):
    """At 1024² each instance is its own chunk; small chunks here must change nothing."""
    import teacherkit_sam.loss as loss_module

    logits, iou_pred, targets, valid, sizes = _random_case(3, 5)
    results = []
    for chunk in (1 << 20, 2 * 64 * 64 * 3, 1):  # all at once, two instances, one instance per chunk
        monkeypatch.setattr(loss_module, "CHUNK_PIXELS", chunk)
        inputs = logits.clone().requires_grad_(True)
        out = SamLoss()({"pred_masks": inputs, "iou_scores": iou_pred}, _collated(targets, valid, sizes))
        out["loss"].backward()
        results.append((out["loss"].detach(), inputs.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])


def test_an_accelerator_takes_larger_chunks_than_the_cpu():
    """At 1024² a CPU chunk is one instance; on an accelerator (here the meta device, which has
    no data) a chunk holds 16, so a 40-instance batch takes 3 chunks' launches, not 40."""
    import teacherkit_sam.loss as loss_module

    cpu = loss_module._pixel_chunks(torch.empty(40, 1, 1024, 1024))
    accelerator = loss_module._pixel_chunks(torch.empty(40, 1, 1024, 1024, device="meta"))
    assert len(cpu) == 40 and len(accelerator) == 3
    for chunks in (cpu, accelerator):  # every instance in exactly one chunk, in order
        assert [i for part in chunks for i in range(40)[part]] == list(range(40))


@pytest.mark.parametrize("resolution", ["input", "low_res"])
def test_the_loss_step_never_reads_a_value_back_from_the_device(resolution):
    """Ops that make the host wait for an accelerator (nonzero, item, truth tests) are
    absent from a loss step on a collated batch, forward and backward."""
    logits, iou_pred, targets, valid, sizes = _random_case(3, 2)
    logits.requires_grad_(True)
    waits = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
    batch = _collated(targets, valid, sizes)  # collate's own work happens on the CPU, in workers
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = SamLoss(resolution=resolution)({"pred_masks": logits, "iou_scores": iou_pred}, batch)
        out["loss"].backward()
    assert {e.key for e in prof.key_averages()} & set(waits) == set()
    assert any(e.key == "aten::index_select" for e in prof.key_averages())  # the profile did see the step


@pytest.mark.parametrize("shape", [(48, 64), (64, 64)])
def test_a_batch_of_one_image_size_matches_the_reference(shape):
    """All images the same size: the crop is every image's area and the sums go
    unweighted; the padding still never counts."""
    logits, iou_pred, targets, valid, _ = _random_case(3, 9)
    sizes = [shape] * 3
    targets[:, :, shape[0]:, :] = 255  # content in the padding below the images
    ours_in, ref_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ours = SamLoss()({"pred_masks": ours_in, "iou_scores": iou_pred}, _collated(targets, valid, sizes))
    ref = reference_loss(ref_in, iou_pred, targets, valid, sizes)
    for name in ("loss", "focal", "dice", "iou"):
        assert ours[name].item() == pytest.approx(ref[name].item(), rel=1e-5, abs=1e-6), name
    ours["loss"].backward()
    ref["loss"].backward()
    assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)
