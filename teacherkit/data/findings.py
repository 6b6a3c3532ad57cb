"""The catalogue of validation checks and the report they produce.

Every problem validation can find has a stable ``code`` (``bbox.outside_image``), a
severity, and says whether ``teacherkit validate --fix`` can repair it. ``docs/data.md``
lists the same catalogue; a test keeps the two in step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

import msgspec

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Check:
    code: str
    severity: Severity
    fixable: bool  # whether --fix can repair it (some findings only in some cases)
    summary: str
    fatal: bool = False  # the file cannot be read at all: exit 2


_E, _W = "error", "warning"

CHECKS: dict[str, Check] = {c.code: c for c in [
    # the file as bytes
    Check("json.syntax", _E, False, "the file is not valid JSON (byte offset, line, column given)", fatal=True),
    Check("json.encoding", _E, True, "the file is not UTF-8 (fix: transcode from Windows-1252/Latin-1)"),
    Check("json.bom", _W, True, "the file starts with a UTF-8 byte-order mark (fix: drop it)"),
    Check("json.too_deep", _E, False, "arrays/objects nested deeper than a JSON reader can follow", fatal=True),
    Check("json.nonstandard_number", _E, False, "NaN or Infinity literals, which JSON does not allow"),
    # top level
    Check("coco.not_object", _E, False, "the top level is not a JSON object", fatal=True),
    Check("coco.missing_key", _E, False, "`images`, `annotations` or `categories` is missing"),
    Check("coco.wrong_type", _E, False, "`images`, `annotations` or `categories` is not a list"),
    # images
    Check("image.not_object", _E, True, "an `images` entry is not an object (fix: drop it)"),
    Check("image.missing_field", _E, False, "an image lacks `id`, `file_name`, `width` or `height`"),
    Check("image.bad_field", _E, False, "an image field has the wrong type or value (non-int id, size <= 0, "
                                        "empty name)"),
    Check("image.duplicate_id", _E, False, "two images share an id"),
    Check("image.duplicate_file", _W, False, "two images share a `file_name`"),
    Check("image.path_escapes", _E, False, "`file_name` is absolute or uses `..` to leave the image folder"),
    Check("image.no_annotations", _W, False, "an image has no annotations (it trains as background only)"),
    # image files
    Check("file.missing", _E, False, "the image file does not exist"),
    Check("file.unreadable", _E, False, "the image file is not an image format that can be opened"),
    Check("file.too_large", _E, False, "the image has more pixels than Pillow decodes safely (decompression "
                                       "bomb); it is never decoded"),
    Check("file.truncated", _E, False, "the image file ends early (no JPEG end marker / PNG IEND chunk)"),
    Check("file.size_mismatch", _E, False, "the file's pixel size differs from `width`/`height`"),
    Check("file.exif_rotated", _W, False, "the file has an EXIF orientation that rotates or flips it"),
    # categories
    Check("category.not_object", _E, True, "a `categories` entry is not an object (fix: drop it)"),
    Check("category.missing_field", _E, False, "a category lacks `id` or `name`"),
    Check("category.bad_field", _E, False, "a category field has the wrong type (non-int id, non-string name)"),
    Check("category.duplicate_id", _E, False, "two categories share an id"),
    Check("category.duplicate_name", _E, False, "two categories share a name (text prompts would collide)"),
    Check("category.empty_name", _E, False, "a category name is empty or only spaces"),
    Check("category.unused", _W, False, "a category has no annotations"),
    # annotations
    Check("annotation.not_object", _E, True, "an `annotations` entry is not an object (fix: drop it)"),
    Check("annotation.missing_field", _E, True, "an annotation lacks `id`, `image_id` or `category_id` "
                                                "(fix: new id, or drop it)"),
    Check("annotation.bad_field", _E, True, "`id`, `image_id` or `category_id` is not an integer (fix: drop it)"),
    Check("annotation.duplicate_id", _E, True, "two annotations share an id (fix: renumber the later one)"),
    Check("annotation.dangling_image", _E, True, "`image_id` names no image (fix: drop the annotation)"),
    Check("annotation.dangling_category", _E, True, "`category_id` names no category (fix: drop the annotation)"),
    Check("annotation.no_geometry", _E, True, "an annotation has no usable bbox, segmentation or keypoints "
                                              "(fix: drop it)"),
    Check("annotation.duplicate", _W, True, "the same object annotated twice (image, category, bbox) (fix: drop)"),
    # boxes
    Check("bbox.missing", _E, True, "a mask is present but `bbox` is missing (fix: derive it from the mask)"),
    Check("bbox.bad_type", _E, True, "`bbox` is not a list of numbers (fix: derive from the mask when there is one)"),
    Check("bbox.wrong_length", _E, True, "`bbox` does not have 4 numbers (fix: derive from the mask)"),
    Check("bbox.non_finite", _E, True, "`bbox` holds NaN or infinity (fix: derive from the mask)"),
    Check("bbox.non_positive_size", _E, True, "`bbox` width or height is <= 0 (fix: derive from the mask)"),
    Check("bbox.exceeds_image", _W, True, "`bbox` extends more than 1 px past the image edge (fix: clip)"),
    Check("bbox.outside_image", _E, True, "`bbox` lies entirely outside the image (fix: from the mask, or drop)"),
    Check("bbox.mask_mismatch", _W, True, "`bbox` and the mask's extent disagree (IoU < 0.5) (fix: from the mask)"),
    # segmentations
    Check("segmentation.bad_type", _E, True, "`segmentation` is neither a polygon list nor an RLE object "
                                             "(fix: remove it when a bbox remains)"),
    Check("segmentation.empty", _E, True, "`segmentation` is empty (fix: remove it when a bbox remains)"),
    Check("polygon.bad_type", _E, True, "a polygon is not a list of numbers (fix: drop the polygon)"),
    Check("polygon.non_finite", _E, True, "a polygon holds NaN or infinity (fix: drop the polygon)"),
    Check("polygon.odd_length", _E, True, "a polygon has an odd count of numbers (fix: drop the polygon)"),
    Check("polygon.too_short", _E, True, "a polygon has fewer than 6 numbers (3 points) (fix: drop the polygon)"),
    Check("polygon.exceeds_image", _W, True, "polygon points lie more than 1 px outside the image (fix: clip)"),
    Check("polygon.outside_image", _E, True, "a polygon lies entirely outside the image (fix: drop the polygon)"),
    Check("polygon.zero_area", _E, True, "a polygon encloses no area (fix: drop the polygon)"),
    Check("rle.bad_field", _E, False, "an RLE lacks `size`/`counts` or they have the wrong type"),
    Check("rle.size_mismatch", _E, False, "RLE `size` differs from the image's [height, width]"),
    Check("rle.bad_counts", _E, False, "RLE counts are malformed (bad characters, negative runs, sum != h*w)"),
    # crowd flags and areas
    Check("iscrowd.bad_value", _E, False, "`iscrowd` is not 0 or 1"),
    Check("iscrowd.polygon_crowd", _W, False, "`iscrowd` is 1 but the segmentation is polygons (COCO crowds are RLE)"),
    Check("iscrowd.uncompressed_not_crowd", _W, True, "uncompressed RLE with `iscrowd` 0 (fix: compress the RLE)"),
    Check("area.missing", _E, True, "`area` is missing; COCO evaluation needs it (fix: compute it)"),
    Check("area.bad_value", _E, True, "`area` is not a finite number >= 0 (fix: compute it)"),
    Check("area.inconsistent", _W, True, "`area` differs clearly from the mask (or box) area (fix: compute it)"),
    # keypoints
    Check("keypoints.bad_length", _E, False, "`keypoints` is not a list of numbers in (x, y, v) triples"),
    Check("keypoints.count_mismatch", _W, True, "`num_keypoints` differs from the labelled keypoints (fix: recount)"),
    # split
    Check("split.rare_class", _W, False, "a class has too few images to appear in every requested split"),
]}


# msgspec structs, not dataclasses: built in C (a file whose every annotation is flagged
# makes a million findings), and without GC tracking (they never form cycles)
class Location(msgspec.Struct, gc=False):
    """Where a finding is: the image and annotation ids when known, and a JSON path."""

    json_path: str = "$"
    image_id: Any = None
    annotation_id: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "annotation_id": self.annotation_id, "json_path": self.json_path}

    def __str__(self) -> str:
        parts = [self.json_path]
        if self.image_id is not None:
            parts.append(f"image {self.image_id}")
        if self.annotation_id is not None:
            parts.append(f"annotation {self.annotation_id}")
        return ", ".join(parts)


class Finding(msgspec.Struct, gc=False):
    """One problem found: its check's code and severity, where, what, and whether ``--fix``
    repairs it."""

    code: str
    severity: Severity
    location: Location
    message: str
    fixable: bool

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "location": self.location.to_dict(),
                "message": self.message, "fixable": self.fixable}


def finding(code: str, message: str, json_path: str = "$", *, image_id: Any = None, annotation_id: Any = None,
            fixable: bool | None = None) -> Finding:
    """A finding of a catalogued check; ``fixable`` overrides the catalogue when a case
    cannot be repaired (a bad bbox with no mask to derive it from)."""
    check = CHECKS[code]
    return Finding(code, check.severity, Location(json_path, image_id, annotation_id), message,
                   check.fixable if fixable is None else (fixable and check.fixable))


_FATAL = frozenset(code for code, check in CHECKS.items() if check.fatal)
_code, _severity, _fixable = attrgetter("code"), attrgetter("severity"), attrgetter("fixable")


@dataclass
class Report:
    """Everything validation found, plus counts of what it looked at."""

    source: str | None = None
    findings: list[Finding] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    images_checked: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def fatal(self) -> bool:
        """The file could not be read as COCO at all (CLI exit 2)."""
        # loops in C: a file whose every annotation is flagged has a million findings
        return not _FATAL.isdisjoint(map(_code, self.findings))

    @property
    def ok(self) -> bool:
        return "error" not in map(_severity, self.findings)

    @property
    def exit_code(self) -> int:
        return 2 if self.fatal else (0 if self.ok else 1)

    def codes(self) -> Counter[str]:
        return Counter(map(_code, self.findings))

    def by_code(self) -> dict[str, list[Finding]]:
        """Findings grouped by code: errors first, then by count."""
        groups: dict[str, list[Finding]] = {}
        for f in self.findings:
            groups.setdefault(f.code, []).append(f)
        return dict(sorted(groups.items(), key=lambda kv: (kv[1][0].severity != "error", -len(kv[1]), kv[0])))

    def to_dict(self, examples: int | None = None) -> dict[str, Any]:
        """JSON form; ``examples`` limits the findings listed per code (all when None)."""
        checks = []
        for code, items in self.by_code().items():
            check = CHECKS[code]
            shown = items if examples is None else items[:examples]
            checks.append({"code": code, "severity": check.severity, "count": len(items),
                           "fixable": sum(map(_fixable, items)), "summary": check.summary,
                           "findings": [f.to_dict() for f in shown]})
        return {"source": self.source, "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "num_images": self.num_images, "num_annotations": self.num_annotations,
                "num_categories": self.num_categories, "images_checked": self.images_checked,
                "seconds": round(self.seconds, 3), "checks": checks}
