"""Reading a user's file: every way it can fail ends as one ShivamError naming the file, the problem and the fix."""

from __future__ import annotations

import json
from pathlib import Path

from shivam.errors import ShivamError


def read_text(path: str | Path, what: str, fix: str) -> str:
    """The file's text. `what` names it in messages ("model file"); `fix` says what to give instead."""
    shown = str(path)
    if len(shown) > 120:
        shown = shown[:60] + "..." + shown[-40:]
    try:
        p = Path(path)
        if p.is_dir():
            raise ShivamError(f"{what} {shown!r} is a directory, not a file; {fix}")
        if not p.exists():
            raise ShivamError(f"{what} {shown!r} does not exist; {fix}")
        if not p.is_file():  # a FIFO or a device: reading it could block forever
            raise ShivamError(f"{what} {shown!r} is not a regular file; {fix}")
        data = p.read_bytes()
    except ShivamError:
        raise
    except OSError as exc:  # name too long, permission denied, an unreadable device
        raise ShivamError(f"{what} {shown!r} cannot be read ({exc.strerror or type(exc).__name__}); {fix}") from None
    if b"\x00" in data[:8192]:
        raise ShivamError(f"{what} {shown!r} is a binary file, not text; {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ShivamError(f"{what} {shown!r} is not UTF-8 text; {fix}") from None


def read_json(path: str | Path, what: str, fix: str):
    text = read_text(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShivamError(f"{what} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno}); {fix}") from None
    except RecursionError:
        raise ShivamError(f"{what} {str(path)!r} nests its JSON too deeply to read; {fix}") from None


def write_text(path: str | Path, text: str, what: str) -> None:
    """Write a report or calibration; a failure (a read-only or full file system, /proc) is one ShivamError."""
    target = writable_file(path, what)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ShivamError(
            f"cannot write {what} {str(path)!r} ({exc.strerror or type(exc).__name__}); give another path"
        ) from None


def writable_file(path: str | Path, what: str) -> Path:
    """A path a report or calibration can be written to: not a directory, its folder creatable."""
    p = Path(path)
    if p.is_dir():
        raise ShivamError(f"{what} {str(path)!r} is a directory; give a file name, e.g. {Path(path) / 'out.html'}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShivamError(
            f"cannot create the folder of {what} {str(path)!r} ({exc.strerror}); give another path"
        ) from None
    return p


def validation_message(exc, source: str, names: dict[str, str] | None = None, fix: str = "") -> str:
    """One line for a pydantic ValidationError: the field (by the name the user wrote it under), what is wrong and
    the fix."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    field = (names or {}).get(loc, loc)
    got = err.get("input")
    got_text = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    where = f"field {field!r}" if field else "the file"
    fix = fix or f"fix {where}"
    return f"{source}: {where}: {err['msg'].lower()}{got_text}; {fix}"
