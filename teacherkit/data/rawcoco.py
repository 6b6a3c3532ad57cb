"""Decoding a COCO file for *validation*: keep going past every problem, stay lean.

Validation must report all problems of a file that :func:`teacherkit.data.coco.load_coco`
would refuse, and must be fast and small on train2017-sized files. So annotations decode
into a struct whose fields are untyped (checked by hand later) and whose ``segmentation``
stays raw JSON bytes (:class:`msgspec.Raw`), decoded one annotation at a time: the polygon
numbers of the whole file never live in memory at once.

Fallbacks, each recorded as a finding: a UTF-8 byte-order mark is skipped, non-UTF-8
text is read as Windows-1252/Latin-1, ``NaN``/``Infinity`` literals go through Python's
``json`` (which accepts them), and a file whose shape defeats the fast path is decoded
generically and normalised here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from teacherkit.data.findings import Finding, finding
from teacherkit.data.jsonbytes import (
    UTF8_BOM,
    Buffer,
    describe_decode_error,
    legacy_text,
    position,
    utf8_error_offset,
)

UNSET = msgspec.UNSET


class RawAnnotation(msgspec.Struct, gc=False):  # never in a cycle: keep a million of them off the GC's lists
    """One annotation as validation sees it: every field as found (``UNSET`` when absent);
    ``segmentation`` is ``msgspec.Raw`` when decoded from bytes, a Python value otherwise."""

    id: Any = UNSET
    image_id: Any = UNSET
    category_id: Any = UNSET
    bbox: Any = UNSET
    segmentation: msgspec.Raw = UNSET
    area: Any = UNSET
    iscrowd: Any = UNSET
    keypoints: Any = UNSET
    num_keypoints: Any = UNSET


ANNOTATION_FIELDS = tuple(RawAnnotation.__struct_fields__)


class _LeanFile(msgspec.Struct):
    images: Any = UNSET
    annotations: list[RawAnnotation] = UNSET
    categories: Any = UNSET


@dataclass
class RawCoco:
    """The decoded top level: values as found, ``UNSET`` for absent keys; ``annotations``
    items are :class:`RawAnnotation` or, when not objects, whatever was there."""

    images: Any = UNSET
    annotations: Any = UNSET
    categories: Any = UNSET
    findings: list[Finding] = field(default_factory=list)
    fatal: bool = False


# Decoder objects: msgspec.json.decode(..., type=T) rebuilds its type plan on every call,
# which at a million segmentations costs more than the decoding itself.
_TYPED_SEGMENTATION = msgspec.json.Decoder(list[list[float]] | dict[str, Any])
_ANY = msgspec.json.Decoder()


_POLYGONS = msgspec.json.Decoder(list[list[float]])


def decode_polygons(value: msgspec.Raw) -> list[list[float]] | None:
    """A segmentation's polygons when it is a list of lists of finite floats, else ``None``
    (an RLE, or anything :func:`decode_segmentation` must look at)."""
    try:
        return _POLYGONS.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def decode_segmentation(value: Any) -> tuple[Any, bool]:
    """A segmentation as Python values, and whether its polygons are known to be lists of
    finite floats. Raw bytes decode typed first (that guarantee, and fast), then
    generically so that wrong types reach the checks instead of raising."""
    if not isinstance(value, msgspec.Raw):
        return value, False
    try:
        return _TYPED_SEGMENTATION.decode(value), True
    except msgspec.ValidationError:
        pass
    try:
        return _ANY.decode(value), False
    except (msgspec.ValidationError, msgspec.DecodeError):
        return json.loads(bytes(value)), False  # out-of-range numbers become inf, as Python reads them


def from_python(data: Any, into: RawCoco | None = None) -> RawCoco:
    """Normalise an already-decoded COCO value (a dict from ``json.load``)."""
    raw = into or RawCoco()
    if not isinstance(data, dict):
        raw.findings.append(finding("coco.not_object", f"the top level is a JSON {_json_type(data)}, "
                                    "expected an object with images, annotations and categories"))
        raw.fatal = True
        return raw
    raw.images = data.get("images", UNSET)
    raw.categories = data.get("categories", UNSET)
    anns = data.get("annotations", UNSET)
    if isinstance(anns, list):
        anns = [RawAnnotation(**{k: v for k, v in a.items() if k in ANNOTATION_FIELDS}) if isinstance(a, dict) else a
                for a in anns]
    raw.annotations = anns
    return raw


def from_bytes(data: Buffer) -> RawCoco:
    """Decode a COCO file's bytes (or a read-only map of them, :func:`read_buffer`),
    recording byte-level problems as findings."""
    raw = RawCoco()
    if data[: len(UTF8_BOM)] == UTF8_BOM:
        raw.findings.append(finding("json.bom", "the file starts with a UTF-8 byte-order mark (EF BB BF)",
                                    "$"))
        data = data[len(UTF8_BOM):]
    offset = utf8_error_offset(data)  # checked first: msgspec's error type for it changed in 0.23
    if offset is not None:
        data = bytes(data)
        raw.findings.append(finding("json.encoding", f"not UTF-8 text: byte 0x{data[offset]:02x} at "
                                    f"{position(data, offset)}; read as Windows-1252/Latin-1", "$"))
        return _generic(legacy_text(data).encode("utf-8"), raw)
    try:
        lean = msgspec.json.decode(data, type=_LeanFile)
    except msgspec.ValidationError:
        return _generic(bytes(data), raw)  # some shape is unexpected: check it all by hand
    except msgspec.DecodeError as exc:
        return _after_decode_error(bytes(data), raw, str(exc))
    except RecursionError:
        return too_deep(raw)
    raw.images, raw.annotations, raw.categories = lean.images, lean.annotations, lean.categories
    return raw


def _generic(data: bytes, raw: RawCoco) -> RawCoco:
    try:
        value = msgspec.json.decode(data)
    except msgspec.ValidationError:  # a number out of float range: Python reads it as inf
        return _python_json(data, raw, None)
    except msgspec.DecodeError as exc:
        return _after_decode_error(data, raw, str(exc))
    except RecursionError:
        return too_deep(raw)
    return from_python(value, raw)


def too_deep(raw: RawCoco) -> RawCoco:
    """The fatal finding of a file nested deeper than the decoder's recursion limit (no
    COCO file is: its deepest value, a polygon, sits five levels down)."""
    raw.findings.append(finding("json.too_deep", "arrays or objects are nested too deeply to decode (a COCO file "
                                "nests five levels)", "$"))
    raw.fatal = True
    return raw


def _after_decode_error(data: bytes, raw: RawCoco, message: str) -> RawCoco:
    offset, text = describe_decode_error(message, data)
    if "non-standard number" in text:
        return _python_json(data, raw, offset)
    raw.findings.append(finding("json.syntax", text, "$"))
    raw.fatal = True
    return raw


def _python_json(data: bytes, raw: RawCoco, offset: int | None) -> RawCoco:
    try:
        value = json.loads(data)
    except RecursionError:
        return too_deep(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = position(data, getattr(exc, "pos", offset or 0))
        raw.findings.append(finding("json.syntax", f"invalid JSON at {where}: {getattr(exc, 'msg', exc)}", "$"))
        raw.fatal = True
        return raw
    where = f" first at {position(data, offset)}" if offset is not None else ""
    raw.findings.append(finding("json.nonstandard_number",
                                f"the file uses NaN/Infinity or out-of-range numbers{where}; JSON readers "
                                "other than Python's reject it", "$"))
    return from_python(value, raw)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


json_type = _json_type
