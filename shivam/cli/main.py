"""The `shivam` entry point. Every user error ends as one line on stderr and exit code 2; anything else is a bug and
keeps its traceback.

Subcommands import what they need when they run, so `shivam predict` never imports torch.
"""

from __future__ import annotations

import errno
import sys

from shivam.errors import ShivamError

# errors of writing the output itself (stdout to a full disk, a closed pipe): the user's, not shivam's
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT, errno.EFBIG}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from shivam.cli import commands
        from shivam.cli.parser import build_parser

        args = build_parser().parse_args(argv)
        rc = commands.COMMANDS[args.command](args) or 0
        sys.stdout.flush()
        return rc
    except ShivamError as exc:
        print(f"shivam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        print(f"shivam: error: cannot write the output ({exc.strerror}); send it somewhere with room", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shivam: interrupted", file=sys.stderr)
        return 130
