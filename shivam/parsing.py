"""Parsing of the CLI's list and range arguments: '1..8', '0,2,4', '0.5..0.9:0.1'."""

from __future__ import annotations

from shivam.errors import ShivamError

K_MAX = 64


def parse_ks(text: str) -> list[int]:
    return parse_ints(text, "--k", 0, K_MAX, "the speculation window")


def parse_ints(text: str, what: str, lo: int, hi: int, meaning: str = "it") -> list[int]:
    """'4', '1..8' (inclusive) or '0,2,4'."""
    try:
        if ".." in text:
            first, last = text.split("..", 1)
            ks = list(range(int(first), int(last) + 1))
        else:
            ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text!r}: give integers like 4, 1..8 or 0,2,4") from None
    if not ks:
        raise ShivamError(f"{what} {text!r} selects nothing: give integers like 4, 1..8 or 0,2,4")
    bad = [k for k in ks if not lo <= k <= hi]
    if bad:
        raise ShivamError(f"{what} {bad[0]} is out of range: {meaning} must be between {lo} and {hi}")
    return ks


def parse_floats(text: str, what: str, lo: float, hi: float) -> list[float]:
    """'0.6,0.8' or 'start..stop:step' (inclusive)."""
    try:
        if ".." in text:
            span, _, step_text = text.partition(":")
            start, stop = (float(x) for x in span.split("..", 1))
            step = float(step_text) if step_text else 0.1
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text!r}: give numbers like 0.8, 0.6,0.8 or 0.5..0.9:0.1") from None
    if not values:
        raise ShivamError(f"{what} {text!r} selects nothing: give numbers like 0.8 or 0.5..0.9:0.1")
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise ShivamError(f"{what} {bad[0]:g} is out of range: it must be between {lo:g} and {hi:g}")
    return values


def parse_positive_int(text: str, what: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ShivamError(f"cannot parse {what} {text!r}: give a whole number >= {minimum}") from None
    if value < minimum:
        raise ShivamError(f"{what} {value} is out of range: it must be at least {minimum}")
    return value
