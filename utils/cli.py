"""Entry-script plumbing: user errors become one line and exit status 2 (DESIGN.md §2); a file
system that refuses a write during the run (read-only, full, permissions changed) one line and exit
status 1, every artifact already written left whole (atomic writes)."""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable

from utils.errors import UserError


# Errors of a file system refusing a write, as opposed to a bug (reported with its traceback).
WRITE_FAULTS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` prints ``<script>: error: <message>`` and exits 2."""
    prog = os.path.basename(sys.argv[0])
    try:
        code = main()
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.exit(2)
    except OSError as e:
        if e.errno not in WRITE_FAULTS or e.filename is None:
            raise
        sys.stderr.write(f"{prog}: error: cannot write {e.filename}: {e.strerror}; the files written so far are "
                         f"whole, rerun once it is writable\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.exit(130)
    sys.exit(code or 0)
