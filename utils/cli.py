"""Entry-script plumbing: user errors become one line and exit status 2 (DESIGN.md §2)."""
from __future__ import annotations

import os
import sys
from typing import Callable

from utils.errors import UserError


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` prints ``<script>: error: <message>`` and exits 2."""
    prog = os.path.basename(sys.argv[0])
    try:
        code = main()
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.exit(130)
    sys.exit(code or 0)
