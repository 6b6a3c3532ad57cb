"""``teacherkit augment list`` and ``teacherkit augment preview``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from teacherkit import cli, hookimpl
from teacherkit.teachers import CharacteristicSpec
from teacherkit_augment.preview import BACKGROUND, PALETTE


@pytest.fixture
def with_host(cli_host):
    """Run the CLI against the test's plugin host."""
    return cli_host


def _palette_pixels(image: np.ndarray) -> int:
    flat = image.reshape(-1, 3)
    return int(sum(np.all(flat == colour, axis=1).sum() for colour in PALETTE))


def test_preview_writes_a_grid_with_boxes_and_masks_drawn(tiny_coco, tmp_path, with_host, capsys):
    data = tiny_coco(num_images=3, size=(48, 64), mask_format="mixed", seed=3)
    out = tmp_path / "grid.png"
    args = ["augment", "preview", str(data), "--characteristics", "symmetric,occluded",
            "--environment", "lighting=variable", "--n", "5", "--tile", "64", "--out", str(out)]
    assert cli.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (3 * 64, 2 * 64)  # 5 tiles: 3 columns, 2 rows
        pixels = np.asarray(png.convert("RGB"))
    for i in range(5):  # every tile has outlines in class colours
        tile = pixels[(i // 3) * 64 : (i // 3 + 1) * 64, (i % 3) * 64 : (i % 3 + 1) * 64]
        assert _palette_pixels(tile) >= 20, f"tile {i} has no drawn box"
    assert np.all(pixels[64:, 128:] == BACKGROUND)  # the sixth cell is empty
    # masks are tinted: the drawn grid differs from the same grid with nothing drawn
    from teacherkit_augment.preview import load_samples, render_grid

    source = load_samples(data, limit=5)
    for sample in source.samples:
        sample["masks"], sample["boxes"] = None, np.zeros((0, 4), np.float32)
        sample["labels"] = np.zeros(0, np.int64)
    bare = np.asarray(render_grid(source, None, n=5, tile=64))
    assert _palette_pixels(bare) < _palette_pixels(pixels)


def test_preview_is_deterministic_and_never_overwrites_without_the_flag(tiny_coco, tmp_path, with_host, capsys):
    data = tiny_coco(num_images=2, size=(40, 40))
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    base = ["augment", "preview", str(data), "-c", "rotation_invariant", "--n", "4", "--tile", "48", "--seed", "9"]
    assert cli.run([*base, "--out", str(first)]) == 0
    assert cli.run([*base, "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    before = first.read_bytes()
    assert cli.run([*base, "--seed", "10", "--out", str(first)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert first.read_bytes() == before
    assert cli.run([*base, "--seed", "10", "--out", str(first), "--overwrite"]) == 0
    assert first.read_bytes() != before


def test_preview_errors_are_one_line_naming_the_flag_or_file(tiny_coco, tmp_path, with_host, capsys):
    data = tiny_coco(num_images=1)
    out = tmp_path / "x.png"
    assert cli.run(["augment", "preview", str(data), "-c", "symetric", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --characteristics: unknown characteristic 'symetric'; did you mean 'symmetric'?")
    assert cli.run(["augment", "preview", str(data), "-e", "weather=sunny", "--out", str(out)]) == 2
    assert "--environment weather: unknown value 'sunny'" in capsys.readouterr().err
    assert cli.run(["augment", "preview", str(data), "-e", "weather", "--out", str(out)]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.run(["augment", "preview", str(data), "--images", str(empty), "--out", str(out)]) == 2
    assert "img_0000.png: image file not found" in capsys.readouterr().err
    assert not out.exists()


def test_list_prints_every_characteristic_including_other_plugins(register_plugin, with_host, capsys):
    class Extra:
        @hookimpl
        def teacherkit_augmentations(self):
            return [CharacteristicSpec("dusty", "object", "dust settles on parts", lambda v, i: [])]

    register_plugin(Extra(), "dust")
    assert cli.run(["augment", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in data["characteristics"]}
    assert by_name["dusty"]["plugin"] == "dust"
    assert by_name["camera"]["values"] == ["fixed", "handheld", "moving"]
    assert data["intensities"] == ["low", "medium", "high"]
    assert cli.run(["augment", "list"]) == 0
    text = capsys.readouterr().out
    for name in ("changes_shape", "thin_structures", "weather", "dusty"):
        assert name in text
