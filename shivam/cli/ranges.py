"""The command line's list and range arguments: '1..8', '0,2,4', '0.5..0.9:0.1'. Ranges are sized before they are
built, so a range above the API's limit (shivam.api.MAX_GRID_ROWS) is refused at once."""

from __future__ import annotations

import math

from shivam.api import MAX_GRID_ROWS
from shivam.errors import ShivamError

_INTS = "give integers like 4, 1..8 or 0,2,4"
_FLOATS = "give numbers like 0.8, 0.6,0.8 or 0.5..0.9:0.1"


def _too_many(what: str, text: str, n: int) -> ShivamError:
    return ShivamError(
        f"{what} {text[:40]!r} selects {n:,} values, above the limit of {MAX_GRID_ROWS:,}; "
        f"give a shorter range or a coarser step"
    )


def _parts(text: str, what: str, hint: str) -> list[str]:
    parts = [part.strip() for part in text.split(",")]
    if any(not part for part in parts) and text.strip():
        raise ShivamError(f"cannot parse {what} {text[:40]!r}: an empty item between commas; {hint}")
    return [part for part in parts if part]


def parse_ints(text: str, what: str, lo: int, hi: int, meaning: str = "it") -> list[int]:
    """'4', '1..8' (inclusive) or '0,2,4'."""
    try:
        if ".." in text:
            first, last = (int(x) for x in text.split("..", 1))
            if last - first + 1 > MAX_GRID_ROWS:
                raise _too_many(what, text, last - first + 1)
            values = list(range(first, last + 1))
        else:
            values = [int(part) for part in _parts(text, what, _INTS)]
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text[:40]!r}: {_INTS}") from None
    if not values:
        raise ShivamError(f"{what} {text[:40]!r} selects nothing: {_INTS}")
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise ShivamError(f"{what} {bad[0]} is out of range: {meaning} must be between {lo} and {hi}")
    return values


def parse_floats(text: str, what: str, lo: float, hi: float) -> list[float]:
    """'0.6,0.8' or 'start..stop:step' (inclusive)."""
    try:
        if ".." in text:
            span, _, step_text = text.partition(":")
            start, stop = (float(x) for x in span.split("..", 1))
            step = float(step_text) if step_text else 0.1
            if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            if n > MAX_GRID_ROWS:
                raise _too_many(what, text, n)
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            values = [float(part) for part in _parts(text, what, _FLOATS)]
    except (ValueError, OverflowError):
        raise ShivamError(f"cannot parse {what} {text[:40]!r}: {_FLOATS}") from None
    if not values:
        raise ShivamError(f"{what} {text[:40]!r} selects nothing: {_FLOATS}")
    bad = [v for v in values if not (lo <= v <= hi)]  # NaN fails too
    if bad:
        raise ShivamError(f"{what} {bad[0]!r} is out of range: it must be between {lo:g} and {hi:g}")
    return values


def parse_whole(text: str, what: str) -> int:
    """A whole number, for an option whose range the API checks (with the message the API gives its callers)."""
    try:
        return int(text)
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text[:40]!r}: give a whole number") from None


def parse_int(text: str, what: str, minimum: int = 1) -> int:
    """A whole number of at least `minimum`; the API checks the upper limits, with the same message for both."""
    try:
        value = int(text)
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text[:40]!r}: give a whole number >= {minimum}") from None
    if value < minimum:
        raise ShivamError(f"{what} {value} is out of range: it must be at least {minimum:,}")
    return value


def parse_float(text: str, what: str, lo: float, hi: float) -> float:
    if "," in text or ".." in text:
        raise ShivamError(f"{what} takes one number, not {text[:40]!r}")
    return parse_floats(text, what, lo, hi)[0]
