"""What every command line shares: a user error becomes one line and exit status 2, Ctrl-C exit status 130.

Set ``HRV_DIFFUSION_DEBUG=1`` to see the traceback of a user error instead.
"""
from __future__ import annotations

import os
import sys

from hrv_diffusion.errors import UserError

# Errors about input that users can fix: ours, and the OS's about paths.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def run_cli(run, args) -> int:
    """Call ``run(args)``; return its exit status, 2 after a user error, 130 after Ctrl-C."""
    try:
        return run(args) or 0
    except USER_ERRORS as error:
        if os.environ.get("HRV_DIFFUSION_DEBUG"):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
