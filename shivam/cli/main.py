"""The `shivam` entry point. Every user error ends as one line on stderr and exit code 2; anything else is a bug and
keeps its traceback.

Subcommands import what they need when they run, so `shivam predict` never imports torch.
"""

from __future__ import annotations

import sys

from shivam.errors import ShivamError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from shivam.cli import commands
        from shivam.cli.parser import build_parser

        args = build_parser().parse_args(argv)
        return getattr(commands, f"cmd_{args.command}")(args) or 0
    except ShivamError as exc:
        print(f"shivam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("shivam: interrupted", file=sys.stderr)
        return 130
