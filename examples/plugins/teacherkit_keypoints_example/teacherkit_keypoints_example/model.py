"""The example's trivial keypoint teacher (torch imported here, lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from teacherkit.teachers import ParameterReport, Teacher, TeacherSpec


class _Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(pixel_values).flatten(1)))


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


class CentroidPreprocessor:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
        from PIL import Image

        h, w = sample["image"].shape[:2]
        img = np.asarray(Image.fromarray(sample["image"]).resize((self.size, self.size)), dtype=np.float32) / 255.0
        kps = np.asarray(sample.get("extra", {}).get("keypoints", []), dtype=np.float32).reshape(-1, 3)
        visible = kps[kps[:, 2] > 0] if len(kps) else kps
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
