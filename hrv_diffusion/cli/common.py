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


def check_output_dir(path, flag: str) -> None:
    """Refuse, before any model is loaded, an output folder that is a file or lies inside one."""
    from pathlib import Path

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == path else f"is inside {folder}, which is a file"
                raise UserError(f"{flag} {path} {where}: pass a folder")
            return


class sigterm_as_interrupt:
    """``with sigterm_as_interrupt():`` SIGTERM (a cluster's preemption) raises KeyboardInterrupt like Ctrl-C, so a
    run saves what it finished; the previous handler is restored on exit. Outside the main thread it does nothing."""

    def __enter__(self):
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            def interrupt(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def rerun_command(program: str, argv, add: tuple[str, ...] = ()) -> str:
    """``program`` with the arguments ``argv`` (``sys.argv[1:]`` when None) and the flags ``add`` appended once,
    quoted for a shell: the command that continues an interrupted run."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    args += [a for a in add if a not in args]
    return " ".join([program, *(shlex.quote(a) for a in args)])


def program_name(argv, default: str) -> str:
    """How the running command was started, for messages that print a command to run next: ``python X.py`` for a
    script, the console script's name otherwise; ``default`` when ``argv`` was passed in (a call from Python)."""
    if argv is not None or not sys.argv or not sys.argv[0]:
        return default
    return f"python {sys.argv[0]}" if sys.argv[0].endswith(".py") else os.path.basename(sys.argv[0])
