"""Raw sample → Grounding DINO inputs, and batches of them.

Runs in DataLoader workers: the object holds only numbers and token lists (picklable),
does no GPU work, and imports torch lazily. Workers ship the resized image as uint8 (a
quarter of float32's bytes through shared memory and the copy to the device) with each
image's size; :func:`finish_batch`, called by the teacher once the batch is on its
device, normalises the pixels and builds the padding mask there (a ``(B, H, W)`` int64
mask would otherwise travel as 8 bytes per pixel).

Boxes become normalised ``(cx, cy, w, h)`` relative to the *unpadded* resized image,
which is what the model predicts: its reference points are scaled by each image's
valid ratio (pixel mask), so batch padding does not shift them. Mapping back to the
original image is then a multiplication by its width and height.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from teacherkit.device_pixels import channel_constants, padding_mask
from teacherkit_dino.prompts import PAD_ID, Prompt, PromptBuilder


def resize_size(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``shortest_edge`` unless the long side would pass
    ``longest_edge`` (then the long side is the limit); aspect ratio kept."""
    short, long = min(height, width), max(height, width)
    scale = shortest_edge / short
    if long * scale > longest_edge:
        scale = longest_edge / long
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def xywh_to_normalised_cxcywh(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """COCO pixel boxes → ``(cx, cy, w, h)`` in ``[0, 1]``, clipped to the image."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    out = np.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], axis=1)
    return out.astype(np.float32)


class GroundingDinoPreprocessor:
    """``pre(sample, train=...)`` → one item; ``pre.collate(items)`` → a batch.

    Batch keys: ``pixel_values (B,3,H,W)`` uint8 (zero padded bottom/right),
    ``image_sizes (B,2)`` int64 (each image's ``(h, w)`` inside the padding), ``input_ids``,
    ``attention_mask``, ``token_type_ids`` (``(B,T)``, each sample's prompt padded with
    ``[PAD]``), ``labels`` (per image ``class_labels`` = phrase index in its prompt and
    ``boxes``), ``phrase_classes`` (per image, phrase → class index), ``prompt_chunks``
    (the prompts that together hold every class, for prediction), and plain metadata
    ``image_ids``, ``orig_sizes`` and ``input_sizes`` as ``(h, w)``. :meth:`finish`
    (:func:`finish_batch`) turns the pixels into the model's normalised ``pixel_values``
    and ``pixel_mask (B,H,W)``.
    """

    def __init__(
        self,
        prompts: PromptBuilder,
        *,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        shortest_edge: int = 800,
        longest_edge: int = 1333,
    ) -> None:
        self.prompts = prompts
        self.image_mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
        self.image_std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)
        self.shortest_edge = int(shortest_edge)
        self.longest_edge = int(longest_edge)

    # -- one sample -------------------------------------------------------------------------
    def image_tensor(self, image: np.ndarray) -> Any:
        """Resize (bilinear, on the uint8 image as before) an ``(H, W, 3)`` image to a
        ``(3, h, w)`` uint8 tensor; normalisation waits for the device (:func:`finish_batch`)."""
        import torch
        from PIL import Image

        height, width = image.shape[:2]
        new_h, new_w = resize_size(height, width, self.shortest_edge, self.longest_edge)
        pil = Image.fromarray(np.ascontiguousarray(image[..., :3]))
        if (new_h, new_w) != (height, width):
            pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1)))

    def finish(self, batch: dict[str, Any], dtype: Any = None) -> dict[str, Any]:
        """:func:`finish_batch` with this preprocessor's mean and std."""
        return finish_batch(batch, self.image_mean, self.image_std, dtype)

    def __call__(self, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
        import torch

        image = sample["image"]
        height, width = int(image.shape[0]), int(image.shape[1])
        pixels = self.image_tensor(image)
        boxes = np.asarray(sample.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(sample.get("labels", np.zeros((0,))), dtype=np.int64).reshape(-1)
        crowd = np.asarray(sample.get("iscrowd", np.zeros(len(labels))), dtype=bool).reshape(-1)
        # Crowd regions and boxes with no area teach nothing a matcher can use (DETR drops them too).
        keep = (~crowd) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0) if len(labels) else np.zeros(0, dtype=bool)
        boxes, labels = boxes[keep], labels[keep]
        # Training draws negatives from the sample's own seed (the trainer's sample_seed(seed,
        # epoch, index)), so the prompt does not depend on which process loads it or on what
        # it drew before; a sample without one draws from the process. Evaluation is deterministic.
        rng = None
        if train:
            seed = (sample.get("extra") or {}).get("seed")
            rng = random.Random(int(seed) if seed is not None else random.getrandbits(64))
        prompt = self.prompts.for_sample(labels.tolist(), rng)
        phrase_of = prompt.phrase_of()
        in_prompt = np.asarray([int(c) in phrase_of for c in labels], dtype=bool)
        boxes, labels = boxes[in_prompt], labels[in_prompt]
        cxcywh = xywh_to_normalised_cxcywh(boxes, height, width)
        return {
            "pixel_values": pixels,
            "boxes": torch.from_numpy(cxcywh),
            "class_labels": torch.as_tensor([phrase_of[int(c)] for c in labels], dtype=torch.long),
            "prompt": prompt,
            "image_id": int(sample.get("image_id", -1)),
            "orig_size": (height, width),
            "input_size": (int(pixels.shape[1]), int(pixels.shape[2])),
        }

    # -- batches ----------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch_size = len(items)
        max_h = max(int(it["pixel_values"].shape[1]) for it in items)
        max_w = max(int(it["pixel_values"].shape[2]) for it in items)
        pixel_values = torch.zeros(batch_size, 3, max_h, max_w, dtype=torch.uint8)
        for i, it in enumerate(items):
            _, h, w = it["pixel_values"].shape
            pixel_values[i, :, :h, :w] = it["pixel_values"]
        prompts: list[Prompt] = [it["prompt"] for it in items]
        input_ids, attention_mask = pad_prompts(prompts)
        return {
            "pixel_values": pixel_values,
            "image_sizes": torch.as_tensor([it["input_size"] for it in items], dtype=torch.long).reshape(-1, 2),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids),
            # a host copy (numpy stays where it is when the batch moves to the GPU): the loss
            # reads the phrase spans from it without waiting for the device
            "input_ids_host": input_ids.numpy().copy(),
            "labels": [{"class_labels": it["class_labels"], "boxes": it["boxes"]} for it in items],
            "phrase_classes": [list(p.classes) for p in prompts],
            "prompt_chunks": [
                {"input_ids": torch.as_tensor([chunk.input_ids], dtype=torch.long), "classes": list(chunk.classes),
                 "spans": [list(s) for s in chunk.spans]}
                for chunk in self.prompts.chunks
            ],
            "image_ids": [it["image_id"] for it in items],
            "orig_sizes": [tuple(it["orig_size"]) for it in items],
            "input_sizes": [tuple(it["input_size"]) for it in items],
        }


def pad_prompts(prompts: Sequence[Prompt]) -> tuple[Any, Any]:
    """``input_ids`` and ``attention_mask`` ``(B, T)``, padded with ``[PAD]`` (id 0, mask 0).

    The pad id is itself a phrase delimiter for transformers' label maps and the mask
    keeps padded positions out of attention and out of the classification loss.
    """
    import torch

    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, : len(p)] = torch.as_tensor(p.input_ids, dtype=torch.long)
        attention_mask[i, : len(p)] = 1
    return input_ids, attention_mask


def finish_batch(batch: dict[str, Any], image_mean: Any, image_std: Any, dtype: Any = None) -> dict[str, Any]:
    """The batch with model-ready ``pixel_values`` and ``pixel_mask``, computed where the
    batch is (the device, after the copy).

    uint8 ``pixel_values`` become ``(x / 255 - mean) / std`` in float32 (the operations,
    in the order, of the former worker-side numpy code, so the values are the same bits),
    zero on the padding, then cast to ``dtype`` (the model's input dtype; ``None`` keeps
    float32); ``pixel_mask`` (int64, 1 inside each image) comes from ``image_sizes``. A
    batch whose pixels are already floating point (finished, or built by hand with a
    ``pixel_mask``) is returned as it is, so finishing twice is harmless.
    """
    import torch

    pixels = batch["pixel_values"]
    if pixels.is_floating_point():
        return batch
    scale, mean, std = channel_constants(
        ((255.0, 255.0, 255.0), tuple(np.asarray(image_mean, np.float64).ravel()),
         tuple(np.asarray(image_std, np.float64).ravel())), pixels.device,
    )
    valid = padding_mask(batch["image_sizes"], pixels.shape[-2], pixels.shape[-1])
    normalised = pixels.to(torch.float32).div_(scale).sub_(mean).div_(std)
    normalised.masked_fill_(~valid[:, None], 0.0)  # the padding was 0 after normalisation
    if dtype is not None:
        normalised = normalised.to(dtype)
    return {**batch, "pixel_values": normalised, "pixel_mask": valid.to(torch.long)}
