"""The command line: a thin client of shivam.api, shivam.calibrate and shivam.report."""

from shivam.cli.main import main

__all__ = ["main"]
