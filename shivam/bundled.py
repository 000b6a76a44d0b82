"""Where the bundled data lives.

In the repository the data sits at the top level (models/, hardware/); in a wheel it is copied into shivam/_data/
(see pyproject.toml), so an installed package needs no checkout.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled data folder {name!r} is missing from the installation")
