"""Validate an edit dataset file: `python -m editpersist.datasets FORMAT PATH`.

Prints "N edit cases" and exits 0, or prints one line naming the row and column
at fault and exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import EditPersistError
from .tasks.formats import FORMATS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in FORMATS:
        print(f"usage: python -m editpersist.datasets {{{','.join(FORMATS)}}} PATH", file=sys.stderr)
        return 2
    try:
        cases = FORMATS[args[0]](Path(args[1]))
    except EditPersistError as e:
        print(f"editpersist: {e}", file=sys.stderr)
        return 1
    print(f"{len(cases)} edit cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
