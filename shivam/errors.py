"""One error type for everything a user can get wrong.

The CLI turns a ShivamError into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

import difflib


class ShivamError(Exception):
    """A user-facing problem: the message names the problem and the fix, on one line."""

    exit_code = 2


def suggest(name: str, choices) -> str:
    """' (did you mean: a, b?)' for close matches of name among choices, or ''."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=3, cutoff=0.5)
    lower_to_real = {c.lower(): c for c in choices}
    return f" (did you mean: {', '.join(lower_to_real[c] for c in close)}?)" if close else ""
