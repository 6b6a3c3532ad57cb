"""Reading COCO JSON bytes and describing why they do not decode.

msgspec is strict JSON: it rejects a UTF-8 byte-order mark, ``NaN``/``Infinity`` and
non-UTF-8 text, all of which appear in COCO files written by other tools. These helpers
turn each failure into a message with the byte offset, line and column, and offer the
lenient fallbacks validation uses to keep reporting past them.
"""

from __future__ import annotations

import codecs
import mmap
import re
from pathlib import Path

from teacherkit.errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"
#: A file's bytes in memory, or mapped read-only (:func:`read_buffer`).
Buffer = bytes | mmap.mmap
#: Files at least this large are mapped rather than copied into memory.
MAP_AT_LEAST = 1 << 24
_BYTE_RE = re.compile(r"\(byte (\d+)\)")
_NONSTANDARD = (b"NaN", b"Infinity", b"-Infinity")


def read_bytes(path: Path) -> bytes:
    """The file's bytes; ``DataError`` naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a COCO .json file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_buffer(path: Path) -> Buffer:
    """The file's bytes for decoding: a large regular file mapped read-only, which saves
    copying it (a train2017 file is 450 MB; msgspec decodes from the map, and the raw
    segmentations it keeps point into it), anything else read as :func:`read_bytes` reads
    it. Errors as :func:`read_bytes`'s."""
    try:
        with open(path, "rb") as fh:
            if Path(path).stat().st_size >= MAP_AT_LEAST:
                return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # not mappable (a pipe, a special file): read it as bytes
        pass
    return read_bytes(path)


def position(data: bytes, offset: int) -> str:
    """``byte N (line L, column C)`` for an offset into ``data``."""
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"byte {offset} (line {line}, column {column})"


def utf8_error_offset(data: Buffer, chunk: int = 1 << 24) -> int | None:
    """Offset of the first byte that is not valid UTF-8, or ``None``.

    Checked here, before any JSON decoder sees the bytes, so that what a non-UTF-8 file
    produces does not depend on how a library version reports it (msgspec < 0.23 raises
    ``UnicodeDecodeError``, 0.23 a ``DecodeError``). ASCII files (most COCO files) are
    recognised without decoding; others are decoded in chunks and the text thrown away,
    so a large file never exists twice in memory."""
    view = memoryview(data)
    if isinstance(data, bytes):
        if data.isascii():
            return None
    elif all(bytes(view[start:start + chunk]).isascii() for start in range(0, len(data), chunk)):
        return None  # a mapped file, a cache-sized piece at a time
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(data), chunk):
        carried = len(decoder.getstate()[0])  # a character split across the chunk boundary
        try:
            decoder.decode(view[start:start + chunk], final=start + chunk >= len(data))
        except UnicodeDecodeError as exc:  # exc.start counts from the carried bytes
            return start - carried + exc.start
    return None


def decode_error_offset(message: str, data: bytes) -> int:
    """The byte offset a msgspec ``DecodeError`` points at (end of data if truncated)."""
    match = _BYTE_RE.search(message)
    if match:
        return int(match.group(1))
    return len(data)


def nonstandard_number_at(data: bytes, offset: int) -> bool:
    """Whether a JavaScript-only number literal (``NaN``, ``Infinity``) starts at ``offset``."""
    return any(data.startswith(token, offset) for token in _NONSTANDARD)


def describe_decode_error(message: str, data: bytes) -> tuple[int, str]:
    """``(offset, human message)`` for a msgspec ``DecodeError`` message."""
    offset = decode_error_offset(message, data)
    if "truncated" in message:
        return offset, f"the JSON ends early at {position(data, offset)} (file truncated?)"
    if nonstandard_number_at(data, offset):
        return offset, f"non-standard number literal (NaN/Infinity) at {position(data, offset)}"
    reason = _BYTE_RE.sub("", message).strip().removeprefix("JSON is malformed:").strip()
    snippet = data[offset:offset + 20].decode("utf-8", errors="replace")
    return offset, f"invalid JSON at {position(data, offset)}: {reason} near {snippet!r}"


def legacy_text(data: bytes) -> str:
    """Text of a file that is not UTF-8: Windows-1252 when it decodes, else Latin-1
    (which always does). Used to keep validating and by ``--fix`` to transcode."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")
