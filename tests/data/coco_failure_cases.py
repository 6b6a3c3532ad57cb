"""The table of broken-COCO fixtures: one mutation of a valid dataset per failure mode.

Each case mutates a copy of a valid dataset (dict and image folder) and says where the
finding must be reported. The base dataset (``make_coco_dataset(mask_format="mixed")``)
has 128x96 images; within each image the first object is a polygon, the second a
compressed RLE, the third an uncompressed-RLE crowd.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANY = object()


@dataclass
class Expect:
    json_path: str
    image_id: Any = ANY
    annotation_id: Any = ANY
    raw: bytes | None = None  # write these bytes instead of the mutated dict
    args: list[str] = field(default_factory=list)
    message: str | None = None  # a substring the message must contain


@dataclass
class Case:
    id: str
    code: str
    mutate: Callable[[dict[str, Any], Path], Expect]


CASES: list[Case] = []


def case(code: str, variant: str = "") -> Callable[[Callable[..., Expect]], Callable[..., Expect]]:
    def register(fn: Callable[..., Expect]) -> Callable[..., Expect]:
        CASES.append(Case(f"{code}{'-' + variant if variant else ''}", code, fn))
        return fn

    return register


def first(d: dict[str, Any], kind: str) -> int:
    """Index of the first annotation whose segmentation is ``kind``."""
    for i, a in enumerate(d["annotations"]):
        seg = a.get("segmentation")
        if kind == "polygon" and isinstance(seg, list):
            return i
        if kind == "rle" and isinstance(seg, dict) and isinstance(seg["counts"], str):
            return i
        if kind == "urle" and isinstance(seg, dict) and isinstance(seg["counts"], list):
            return i
    raise LookupError(kind)


def ann_expect(d: dict[str, Any], i: int, suffix: str = "", **kw: Any) -> Expect:
    a = d["annotations"][i]
    return Expect(f"$.annotations[{i}]{suffix}", image_id=a["image_id"], annotation_id=a["id"], **kw)


def set_ann(d: dict[str, Any], kind: str, key: str, value: Any, suffix: str | None = None) -> Expect:
    i = first(d, kind)
    d["annotations"][i][key] = value
    return ann_expect(d, i, f".{key}" if suffix is None else suffix)


# -- the file as bytes ---------------------------------------------------------------


@case("json.syntax")
def _json_syntax(d, root):
    return Expect("$", raw=b'{"images": [1 2]}', message="byte 14 (line 1, column 15)")


@case("json.syntax", "truncated")
def _json_truncated(d, root):
    return Expect("$", raw=json.dumps(d).encode()[:-40], message="ends early")


@case("json.too_deep")
def _json_too_deep(d, root):
    # deeper than any decoder's recursion limit: RecursionError must become a finding
    return Expect("$", raw=b'{"images": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", message="nested too deeply")


@case("json.too_deep", "objects")
def _json_too_deep_objects(d, root):
    return Expect("$", raw=b'{"info": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}", message="nested")


@case("json.encoding")
def _json_encoding(d, root):
    d["categories"][0]["name"] = "café"
    return Expect("$", raw=json.dumps(d, ensure_ascii=False).encode("latin-1"), message="0xe9")


@case("json.bom")
def _json_bom(d, root):
    return Expect("$", raw=b"\xef\xbb\xbf" + json.dumps(d).encode())


@case("json.nonstandard_number")
def _json_nan(d, root):
    d["annotations"][0]["area"] = float("nan")
    return Expect("$", message="NaN")


@case("coco.not_object")
def _not_object(d, root):
    return Expect("$", raw=b"[1, 2, 3]")


@case("coco.missing_key")
def _missing_key(d, root):
    del d["categories"]
    return Expect("$.categories")


@case("coco.wrong_type")
def _wrong_type(d, root):
    d["images"] = {"id": 1}
    return Expect("$.images")


# -- images --------------------------------------------------------------------------


@case("image.not_object")
def _image_not_object(d, root):
    d["images"].append(5)
    return Expect(f"$.images[{len(d['images']) - 1}]")


@case("image.missing_field")
def _image_missing(d, root):
    del d["images"][1]["width"]
    return Expect("$.images[1].width", image_id=2)


@case("image.bad_field")
def _image_bad(d, root):
    d["images"][1]["height"] = "96"
    return Expect("$.images[1].height", image_id=2)


@case("image.duplicate_id")
def _image_dup(d, root):
    d["images"][1]["id"] = d["images"][0]["id"]
    return Expect("$.images[1].id", image_id=1)


@case("image.duplicate_file")
def _image_dup_file(d, root):
    d["images"][1]["file_name"] = d["images"][0]["file_name"]
    return Expect("$.images[1].file_name", image_id=2)


@case("image.path_escapes")
def _escapes(d, root):
    d["images"][0]["file_name"] = "../" + d["images"][0]["file_name"]
    return Expect("$.images[0].file_name", image_id=1)


@case("image.path_escapes", "absolute")
def _absolute(d, root):
    d["images"][2]["file_name"] = str(root.resolve() / d["images"][2]["file_name"])
    return Expect("$.images[2].file_name", image_id=3)


@case("image.no_annotations")
def _no_anns(d, root):
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] != 2]
    return Expect("$.images[1]", image_id=2)


# -- image files ---------------------------------------------------------------------


@case("file.missing")
def _file_missing(d, root):
    (root / d["images"][0]["file_name"]).unlink()
    return Expect("$.images[0].file_name", image_id=1)


@case("file.unreadable")
def _file_unreadable(d, root):
    (root / d["images"][1]["file_name"]).write_bytes(b"this is not an image at all")
    return Expect("$.images[1].file_name", image_id=2)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): a decompression
    bomb as Pillow sees it, a few bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@case("file.too_large")
def _file_bomb(d, root):
    (root / d["images"][1]["file_name"]).write_bytes(png_header(20_000, 20_000))  # over 2x the limit: an error
    return Expect("$.images[1].file_name", image_id=2, message="too many pixels")


@case("file.too_large", "warning")
def _file_bomb_warning(d, root):
    (root / d["images"][2]["file_name"]).write_bytes(png_header(10_000, 10_000))  # over the limit: a warning
    return Expect("$.images[2].file_name", image_id=3, message="decompression bomb")


@case("file.truncated")
def _file_truncated(d, root):
    path = root / d["images"][2]["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Expect("$.images[2].file_name", image_id=3)


@case("file.truncated", "jpeg")
def _file_truncated_jpeg(d, root):
    import numpy as np
    from PIL import Image

    name = "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / name, quality=95)
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) - 300])
    d["images"][2]["file_name"] = name
    return Expect("$.images[2].file_name", image_id=3)


@case("file.size_mismatch")
def _file_size(d, root):
    d["images"][0]["width"] = 200
    return Expect("$.images[0]", image_id=1, message="128x96")


@case("file.exif_rotated")
def _exif(d, root):
    from PIL import Image

    name = "rotated.jpg"
    img = Image.new("RGB", (128, 96), (10, 200, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display: shown as 96x128
    img.save(root / name, exif=exif)
    d["images"][3]["file_name"] = name
    return Expect("$.images[3].file_name", image_id=4, message="stored pixels")


# -- categories ----------------------------------------------------------------------


@case("category.not_object")
def _cat_not_object(d, root):
    d["categories"].append("square")
    return Expect("$.categories[3]")


@case("category.missing_field")
def _cat_missing(d, root):
    del d["categories"][0]["name"]
    return Expect("$.categories[0].name")


@case("category.bad_field")
def _cat_bad(d, root):
    d["categories"][1]["id"] = "2"
    return Expect("$.categories[1].id")


@case("category.duplicate_id")
def _cat_dup(d, root):
    d["categories"].append({"id": 1, "name": "other"})
    return Expect("$.categories[3].id")


@case("category.duplicate_name")
def _cat_dup_name(d, root):
    d["categories"].append({"id": 9, "name": " Square"})
    return Expect("$.categories[3].name")


@case("category.empty_name")
def _cat_empty(d, root):
    d["categories"][2]["name"] = "   "
    return Expect("$.categories[2].name")


@case("category.unused")
def _cat_unused(d, root):
    d["categories"].append({"id": 0, "name": "hexagon"})
    return Expect("$.categories[3]")


# -- annotations ---------------------------------------------------------------------


@case("annotation.not_object")
def _ann_not_object(d, root):
    d["annotations"].append([1, 2])
    return Expect(f"$.annotations[{len(d['annotations']) - 1}]")


@case("annotation.missing_field")
def _ann_missing(d, root):
    a = d["annotations"][0]
    del a["image_id"]
    return Expect("$.annotations[0].image_id", annotation_id=a["id"])


@case("annotation.missing_field", "id")
def _ann_missing_id(d, root):
    del d["annotations"][1]["id"]
    return Expect("$.annotations[1].id")


@case("annotation.bad_field")
def _ann_bad(d, root):
    a = d["annotations"][0]
    a["category_id"] = "1"
    return Expect("$.annotations[0].category_id", annotation_id=a["id"])


@case("annotation.duplicate_id")
def _ann_dup(d, root):
    d["annotations"][2]["id"] = d["annotations"][0]["id"]
    return Expect("$.annotations[2].id", annotation_id=d["annotations"][0]["id"])


@case("annotation.dangling_image")
def _ann_dangling_image(d, root):
    d["annotations"][0]["image_id"] = 999
    return Expect("$.annotations[0].image_id", annotation_id=d["annotations"][0]["id"], image_id=999)


@case("annotation.dangling_category")
def _ann_dangling_cat(d, root):
    d["annotations"][0]["category_id"] = 999
    return ann_expect(d, 0, ".category_id")


@case("annotation.no_geometry")
def _no_geometry(d, root):
    i = first(d, "polygon")
    del d["annotations"][i]["bbox"], d["annotations"][i]["segmentation"]
    return ann_expect(d, i)


@case("annotation.duplicate")
def _ann_duplicate(d, root):
    d["annotations"].append({**d["annotations"][0], "id": 1000})
    return ann_expect(d, len(d["annotations"]) - 1)


# -- boxes ---------------------------------------------------------------------------


@case("bbox.missing")
def _bbox_missing(d, root):
    i = first(d, "rle")
    del d["annotations"][i]["bbox"]
    return ann_expect(d, i, ".bbox")


@case("bbox.bad_type")
def _bbox_bad(d, root):
    return set_ann(d, "polygon", "bbox", "10,10,20,20")


@case("bbox.wrong_length")
def _bbox_len(d, root):
    return set_ann(d, "polygon", "bbox", [10, 10, 20])


@case("bbox.non_finite")
def _bbox_inf(d, root):
    return set_ann(d, "polygon", "bbox", [10, 10, float("inf"), 20])


@case("bbox.non_positive_size")
def _bbox_zero(d, root):
    return set_ann(d, "rle", "bbox", [10, 10, 0, 20])


@case("bbox.exceeds_image")
def _bbox_exceeds(d, root):
    return set_ann(d, "polygon", "bbox", [100, 10, 60, 20])


@case("bbox.outside_image")
def _bbox_outside(d, root):
    return set_ann(d, "polygon", "bbox", [500, 500, 10, 10])


@case("bbox.outside_image", "no-mask")
def _bbox_outside_nomask(d, root):
    i = first(d, "polygon")
    del d["annotations"][i]["segmentation"]
    d["annotations"][i]["bbox"] = [-50, 10, 20, 20]
    return ann_expect(d, i, ".bbox")


@case("bbox.mask_mismatch")
def _bbox_mismatch(d, root):
    return set_ann(d, "polygon", "bbox", [0, 0, 4, 4])


@case("bbox.mask_mismatch", "rle")
def _bbox_mismatch_rle(d, root):
    return set_ann(d, "rle", "bbox", [0, 0, 4, 4])


# -- segmentations -------------------------------------------------------------------


@case("segmentation.bad_type")
def _seg_bad(d, root):
    return set_ann(d, "polygon", "segmentation", "polygon")


@case("segmentation.empty")
def _seg_empty(d, root):
    return set_ann(d, "polygon", "segmentation", [])


@case("polygon.bad_type")
def _poly_bad(d, root):
    return set_ann(d, "polygon", "segmentation", [[10, "a", 20, 10, 20, 20]], ".segmentation[0]")


@case("polygon.bad_type", "flat")
def _poly_flat(d, root):
    return set_ann(d, "polygon", "segmentation", [10, 10, 40, 10, 40, 40], ".segmentation")


@case("polygon.non_finite")
def _poly_nan(d, root):
    return set_ann(d, "polygon", "segmentation", [[10, 10, float("nan"), 10, 20, 20]], ".segmentation[0]")


@case("polygon.odd_length")
def _poly_odd(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["segmentation"].append([10, 10, 20, 10, 20])
    return ann_expect(d, i, ".segmentation[1]")


@case("polygon.too_short")
def _poly_short(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["segmentation"].append([10, 10, 20, 20])
    return ann_expect(d, i, ".segmentation[1]")


@case("polygon.exceeds_image")
def _poly_exceeds(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["segmentation"].append([100, 10, 140, 10, 140, 30])
    return ann_expect(d, i, ".segmentation[1]")


@case("polygon.outside_image")
def _poly_outside(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["segmentation"].append([200, 200, 210, 200, 210, 210])
    return ann_expect(d, i, ".segmentation[1]")


@case("polygon.zero_area")
def _poly_zero(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["segmentation"].insert(0, [10, 10, 20, 20, 30, 30])
    return ann_expect(d, i, ".segmentation[0]")


@case("rle.bad_field")
def _rle_field(d, root):
    i = first(d, "rle")
    del d["annotations"][i]["segmentation"]["size"]
    return ann_expect(d, i, ".segmentation.size")


@case("rle.size_mismatch")
def _rle_size(d, root):
    i = first(d, "rle")
    d["annotations"][i]["segmentation"]["size"] = [128, 96]  # (w, h) swapped: a classic
    return ann_expect(d, i, ".segmentation.size")


@case("rle.bad_counts")
def _rle_counts(d, root):
    i = first(d, "rle")
    d["annotations"][i]["segmentation"]["counts"] = "!!not rle"
    return ann_expect(d, i, ".segmentation.counts", message="invalid character")


@case("rle.bad_counts", "uncompressed-sum")
def _urle_counts(d, root):
    i = first(d, "urle")
    d["annotations"][i]["segmentation"]["counts"].append(7)
    return ann_expect(d, i, ".segmentation.counts", message="pixels")


@case("iscrowd.bad_value")
def _crowd_bad(d, root):
    return set_ann(d, "polygon", "iscrowd", 2)


@case("iscrowd.polygon_crowd")
def _crowd_poly(d, root):
    return set_ann(d, "polygon", "iscrowd", 1, ".segmentation")


@case("iscrowd.uncompressed_not_crowd")
def _crowd_urle(d, root):
    return set_ann(d, "urle", "iscrowd", 0, ".segmentation")


@case("area.missing")
def _area_missing(d, root):
    i = first(d, "polygon")
    del d["annotations"][i]["area"]
    return ann_expect(d, i, ".area")


@case("area.bad_value")
def _area_bad(d, root):
    return set_ann(d, "rle", "area", -5)


@case("area.inconsistent")
def _area_inconsistent(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["area"] = d["annotations"][i]["area"] * 3 + 100
    return ann_expect(d, i, ".area")


@case("area.inconsistent", "rle")
def _area_inconsistent_rle(d, root):
    i = first(d, "rle")
    d["annotations"][i]["area"] = 1.0
    return ann_expect(d, i, ".area")


@case("keypoints.bad_length")
def _kp_len(d, root):
    return set_ann(d, "polygon", "keypoints", [10, 10])


@case("keypoints.count_mismatch")
def _kp_count(d, root):
    i = first(d, "polygon")
    d["annotations"][i]["keypoints"] = [10, 10, 2, 0, 0, 0]
    d["annotations"][i]["num_keypoints"] = 2
    return ann_expect(d, i, ".num_keypoints")


@case("split.rare_class")
def _rare(d, root):
    d["categories"].append({"id": 40, "name": "rare"})
    d["annotations"].append({**d["annotations"][0], "id": 1000, "category_id": 40})
    return Expect("$.categories[3]", args=["--split", "train:0.7,val:0.15,test:0.15", "--out", str(root / "splits")])
