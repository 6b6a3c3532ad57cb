"""The UTF-8 check that runs before any JSON decoder, so that a non-UTF-8 file is reported
the same way whatever error class the installed msgspec uses for it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teacherkit.data.coco import load_coco
from teacherkit.data.jsonbytes import utf8_error_offset
from teacherkit.errors import DataError

# bytes that make valid and invalid UTF-8: ASCII, lead and continuation bytes, never-valid bytes
ALPHABET = [b"a", b"{", b"\xc3", b"\xa9", b"\xe2", b"\x82", b"\xac", b"\xf0", b"\x9f", b"\x98", b"\xff", b"\xed"]


def _python_offset(data: bytes) -> int | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


@given(st.lists(st.sampled_from(ALPHABET), max_size=60).map(b"".join), st.integers(1, 9))
def test_offset_is_pythons_at_any_chunk_size(data, chunk):
    assert utf8_error_offset(data, chunk=chunk) == _python_offset(data)


def test_ascii_and_valid_text_have_no_offset():
    assert utf8_error_offset(b'{"images": []}') is None
    assert utf8_error_offset('{"name": "café €"}'.encode()) is None


def test_load_coco_names_the_byte_of_a_windows_1252_file(tmp_path):
    text = json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "café"}]},
                      ensure_ascii=False)
    path = tmp_path / "latin.json"
    path.write_bytes(text.encode("cp1252"))
    offset = text.encode("cp1252").index(b"\xe9")
    with pytest.raises(DataError) as err:
        load_coco(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text at byte {offset} ")
    assert "validate --fix" in str(err.value)
