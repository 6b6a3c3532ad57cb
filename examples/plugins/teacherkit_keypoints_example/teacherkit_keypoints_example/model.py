"""The example's trivial keypoint teacher (torch imported here, lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec


class _Regressor(nn.Module):
    """Soft-argmax over a one-channel heatmap: the expected (x, y) of a spatial softmax,
    in [0, 1]. Unlike pooling the features away, it can say *where* things are, so it
    learns targets that differ from image to image in a few steps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        heat = self.features(pixel_values).flatten(1)  # (B, H*W)
        height, width = pixel_values.shape[-2:]
        weights = torch.softmax(heat, dim=1).view(-1, height, width)
        ys = (torch.arange(height, device=heat.device, dtype=heat.dtype) + 0.5) / height
        xs = (torch.arange(width, device=heat.device, dtype=heat.dtype) + 0.5) / width
        return torch.stack([(weights.sum(1) * xs).sum(1), (weights.sum(2) * ys).sum(1)], dim=1)


class CentroidTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, config: Any) -> None:
        self.spec = spec
        self.config = config
        self.model = _Regressor()

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["pixel_values"])

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        with torch.no_grad():
            xy = model(batch["pixel_values"]).cpu().numpy()
        out = []
        for (x, y), image_id, (h, w) in zip(xy, batch["image_ids"], batch["orig_sizes"], strict=True):
            out.append([{"image_id": image_id, "keypoints": [float(x * w), float(y * h), 2], "score": 1.0}])
        return out

    def save_adapter(self, directory: Path) -> None:
        from safetensors.torch import save_file

        Path(directory).mkdir(parents=True, exist_ok=True)
        save_file(self.model.state_dict(), str(Path(directory) / "model.safetensors"))

    def load_adapter(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))

    def parameter_report(self) -> ParameterReport:
        n = sum(p.numel() for p in self.model.parameters())
        return ParameterReport(total=n, trainable=n, mode="full")

    # the core's default hooks ask the teacher for these, so the plugin needs no hook for them
    def make_preprocessor(self) -> CentroidPreprocessor:
        return CentroidPreprocessor(self.config.image_size)

    def make_loss(self) -> Any:
        return centroid_loss


def keypoints_of(sample: dict[str, Any]) -> np.ndarray:
    """Every instance's ``(x, y, visibility)`` rows of a sample, ``(M, 3)``: the sample's
    ``keypoints`` field (moved by augmentation with the image)."""
    kps = sample.get("keypoints")
    if kps is None:  # a sample built before Sample had the field
        kps = sample.get("extra", {}).get("keypoints", [])
    return np.asarray(kps, dtype=np.float32).reshape(-1, 3)


class CentroidPreprocessor:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
        from PIL import Image

        h, w = sample["image"].shape[:2]
        img = np.asarray(Image.fromarray(sample["image"]).resize((self.size, self.size)), dtype=np.float32) / 255.0
        kps = keypoints_of(sample)
        visible = kps[kps[:, 2] > 0]
        target = visible[:, :2].mean(0) / np.array([w, h], np.float32) if len(visible) else np.array([0.5, 0.5])
        return {
            "pixel_values": torch.from_numpy(img).permute(2, 0, 1),
            "target": torch.as_tensor(target, dtype=torch.float32),
            "image_id": sample["image_id"],
            "orig_size": (h, w),
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "target": torch.stack([i["target"] for i in items]),
            "image_ids": [i["image_id"] for i in items],
            "orig_sizes": [i["orig_size"] for i in items],
        }


def centroid_loss(outputs: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    loss = nn.functional.l1_loss(outputs, batch["target"])
    return {"loss": loss, "l1": loss.detach()}
