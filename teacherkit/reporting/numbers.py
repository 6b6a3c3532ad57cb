"""One way to print numbers in tables (the report's and the console's).

A column shares one number of decimals, chosen so its largest value shows four
significant digits: ``84.5`` sits next to ``104.6``, never ``84.5200`` next to ``104.6``.
Undefined values (``None``, NaN) show as an en dash, never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

#: Shown where a value is undefined (no ground truth of a class, a metric not computed).
UNDEFINED = "\u2013"
SIGNIFICANT = 4


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def decimals_for(values: Iterable[Any], significant: int = SIGNIFICANT) -> int:
    """Decimals that give the largest finite value of ``values`` ``significant`` digits
    (0 for integers and for magnitudes of ``10**significant`` and up)."""
    floats = [abs(float(v)) for v in values if _finite(v) and not isinstance(v, int)]
    if not floats:
        return 0
    largest = max(floats)
    if largest == 0:
        return significant - 1
    digits_before_point = math.floor(math.log10(largest)) + 1
    return max(0, min(significant - digits_before_point, 6))


def format_number(value: Any, decimals: int | None = None) -> str:
    """``value`` for a table cell; ``decimals`` from :func:`decimals_for` when omitted.

    Integers print as integers, booleans as ``yes``/``no``, non-numbers as ``str``.
    Values too small for the decimals (``0 < |v| < 10**-decimals``) use scientific notation
    rather than printing a misleading ``0.0000``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, float):
        return str(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    places = decimals_for([value]) if decimals is None else decimals
    if value != 0 and abs(value) < 0.5 * 10 ** -places:
        return f"{value:.2e}"
    return f"{value:.{places}f}"


def format_column(values: list[Any]) -> list[str]:
    """Every cell of one column with the same decimals (see the module docstring)."""
    places = decimals_for(values)
    return [format_number(v, places) for v in values]


def format_signed(value: Any, decimals: int) -> str:
    """A difference (``+0.0123``); undefined as a dash."""
    if not _finite(value):
        return UNDEFINED
    return f"{value:+.{decimals}f}"
