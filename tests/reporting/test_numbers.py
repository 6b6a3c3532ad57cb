"""Table numbers: one column, one number of decimals; undefined is a dash, never 0."""

from __future__ import annotations

from teacherkit.reporting.numbers import UNDEFINED, decimals_for, format_column, format_number, format_signed


def test_a_column_shares_its_decimals():
    assert format_column([84.52, 104.6]) == ["84.5", "104.6"]
    assert format_column([0.4521, 0.1, 0.98765]) == ["0.4521", "0.1000", "0.9877"]
    assert format_column([12, 7]) == ["12", "7"]


def test_undefined_and_special_values():
    assert format_column([None, 0.5, float("nan")]) == [UNDEFINED, "0.5000", UNDEFINED]
    assert format_number(True) == "yes" and format_number("abc") == "abc"
    assert format_number(float("inf")) == "inf"
    # too small for the column's decimals: not a misleading 0.0
    assert format_number(0.00001, 1) == "1.00e-05"
    assert format_number(0.0, 2) == "0.00"


def test_decimals_and_signed_differences():
    assert decimals_for([1234.5]) == 0 and decimals_for([12.3]) == 2 and decimals_for([0.5]) == 4
    assert decimals_for([]) == 0
    assert format_signed(0.01234, 4) == "+0.0123" and format_signed(-2.0, 1) == "-2.0"
    assert format_signed(None, 3) == UNDEFINED
