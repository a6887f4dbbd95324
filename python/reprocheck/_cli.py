"""The `reprocheck` command of an installed wheel: the tool's own executable in this package
(reprocheck/_bin), run in place of this process with the same arguments."""
from __future__ import annotations

import os
import sys


def main() -> None:
    exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "reprocheck")
    if not os.access(exe, os.X_OK):
        sys.exit(
            f"reprocheck: error: no reprocheck executable at {exe}: this is the capture package alone "
            "(pip install ./python); install the reprocheck wheel (ci/wheel builds it), or use build/reprocheck"
        )
    os.execv(exe, ["reprocheck", *sys.argv[1:]])


if __name__ == "__main__":
    main()
