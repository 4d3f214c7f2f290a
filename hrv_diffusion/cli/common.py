"""What every command line shares: a user error becomes one line and exit status 2, Ctrl-C exit status 130.

Set ``HRV_DIFFUSION_DEBUG=1`` to see the traceback of a user error instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from hrv_diffusion.errors import UserError

# Errors about input that users can fix: ours, and the OS's about paths.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def run_cli(run, args) -> int:
    """Check the output paths of ``args`` (``check_outputs``) and ``args.model_card``'s name if there is one
    (``hub.check_card_name``), call ``run(args)``; return its exit status, 2 after a user error, 130 after Ctrl-C."""
    import warnings

    # diffusers passes huggingface_hub a deprecated argument on every load: noise above our one-line messages
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
    try:
        check_outputs(args)  # an output folder that is a file fails here, before any model loads
        if getattr(args, "model_card", None):  # a typo or a missing folder fails here, before anything else
            from hrv_diffusion.core.hub import check_card_name

            check_card_name(args.model_card)
        return run(args) or 0
    except USER_ERRORS as error:
        if os.environ.get("HRV_DIFFUSION_DEBUG"):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def output_problem(path, flag: str, *, is_file: bool = False) -> str | None:
    """Why ``path`` cannot be the output folder (or with ``is_file`` the output file) of ``flag``: it is a file
    (a folder), or lies inside a file; None when it can be made."""
    path = Path(path).expanduser()
    if is_file and path.is_dir():
        return f"{flag} {path} is a folder: pass a file path"
    for folder in (path.parent,) if is_file else (path,):
        for above in (folder, *folder.parents):
            if above.exists():
                if above.is_dir():
                    return None
                if above == path:
                    return f"{flag} {path} is a file: pass a folder"
                return f"{flag} {path} is inside {above}, which is a file: pick another path"
    return None


def check_output_dir(path, flag: str) -> None:
    """Refuse, before any model is loaded, an output folder that is a file or lies inside one."""
    problem = output_problem(path, flag)
    if problem:
        raise UserError(problem)


def check_output_file(path, flag: str) -> None:
    """Refuse, before any model is loaded, an output file that is a folder or whose folder is (inside) a file."""
    problem = output_problem(path, flag, is_file=True)
    if problem:
        raise UserError(problem)


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


def rerun_command(program: str, argv, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> str:
    """``program`` with the arguments ``argv`` (``sys.argv[1:]`` when None), the switches ``drop`` removed and the
    flags ``add`` appended once, quoted for a shell: the command that continues an interrupted run."""
    import shlex

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in drop]
    args += [a for a in add if a not in args]
    return " ".join([program, *(shlex.quote(a) for a in args)])


def interrupted(args, where, default_program: str) -> int:
    """After Ctrl-C or SIGTERM in a run that writes images: say where the finished ones are and print the command
    that continues (the same command without ``--overwrite``: the finished images are kept); exit status 130."""
    again = rerun_command(getattr(args, "_program", default_program), getattr(args, "_argv", None),
                          drop=("--overwrite",))
    print(f"interrupted: the finished images are saved under {where}; continue with (it skips them): {again}",
          file=sys.stderr)
    return 130


def cli_main(run, parser: argparse.ArgumentParser, argv, program: str, toy_defaults: dict | None = None) -> int:
    """Parse ``argv`` (with ``--model_card toy``: ``toy_defaults`` first, see ``use_toy_defaults``) and call
    ``run(args)`` through ``run_cli``; the args remember how the command was started (``_argv``, ``_program``) to
    print the command that continues after an interrupt."""
    use_toy_defaults(parser, argv, toy_defaults)
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    args._program = program_name(argv, program)
    return run_cli(run, args)


TOY_CARDS = ("toy", "toy-dit")  # the toy UNet and the toy DiT share the toy world's defaults


def card_in(argv, default: str | None) -> str | None:
    """The ``--model_card`` that ``argv`` gives (the last one, as argparse), else ``default``."""
    card = default
    for i, word in enumerate(argv):
        if word == "--model_card" and i + 1 < len(argv):
            card = argv[i + 1]
        elif word.startswith("--model_card="):
            card = word.split("=", 1)[1]
    return card


def use_toy_defaults(parser: argparse.ArgumentParser, argv, defaults: dict | None) -> None:
    """The toy model's own defaults (its concept set, HRVs, prompts, fewer seeds) for the flags a command line
    does not give, when it runs on ``--model_card toy``; ``--help`` lists them. ``defaults``: flag dest -> value."""
    if not defaults:
        return
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    shown = "; ".join(f"{options.get(dest, dest)} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                      for dest, v in defaults.items())
    note = f"With --model_card toy (or toy-dit) the defaults are the toy model's: {shown}."
    parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note
    argv = sys.argv[1:] if argv is None else list(argv)
    if card_in(argv, parser.get_default("model_card")) in TOY_CARDS:
        parser.set_defaults(**defaults)
        for action in parser._actions:
            if action.dest in defaults:
                action.required = False  # the toy's default stands in (e.g. A&E's --prompt)


def program_name(argv, default: str) -> str:
    """How the running command was started, for messages that print a command to run next: ``python X.py`` for a
    script, the console script's name otherwise; ``default`` when ``argv`` was passed in (a call from Python)."""
    if argv is not None or not sys.argv or not sys.argv[0]:
        return default
    return f"python {sys.argv[0]}" if sys.argv[0].endswith(".py") else os.path.basename(sys.argv[0])


# ------------------------------------------------------------------------------------------------ --help

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to a flag's help, once: not when the help
    already says its default, and not for a default of None, False or an empty list (a switch, or "not given")."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not text or "default" in text.lower() or "%(default)" in text or default is argparse.SUPPRESS
                or default is None or default is False or default == [] or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"


# ------------------------------------------------------------------------------------------------ flag types
# Each turns a bad value into argparse's one line: "argument --batch_size: must be a positive integer, got -3".

def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, steps)."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (indices, seeds, start steps)."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _finite(text: str, what: str) -> float:
    value = _number(text, float, what)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (reweighting factors may be negative)."""
    return _finite(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (guidance scales, step sizes)."""
    value = _finite(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (a fraction of the steps, a threshold)."""
    value = _finite(text, "a number between 0 and 1")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text}")
    return value


def step_fraction(text: str) -> float:
    """A fraction of the denoising steps: [0, 1], or a little above 1 (the reference's 1.01 means 'to the end')."""
    value = _finite(text, "a fraction of the steps between 0 and 1.01")
    if not 0 <= value <= 1.01:
        raise argparse.ArgumentTypeError(f"must be a fraction of the steps between 0 and 1.01, got {text}")
    return value


def output_folder(text: str) -> str:
    """An output folder (``--output_dir``, ``--output_path``, ``--cache_dir``, ...): ``ArgumentParser`` refuses,
    right after parsing, one that is a file or lies inside a file, naming the flag."""
    return text


def output_file(text: str) -> str:
    """An output file (a CSV, a list): ``ArgumentParser`` refuses, right after parsing, one that is a folder or whose
    folder is (inside) a file, naming the flag."""
    return text


def output_flags(parser: argparse.ArgumentParser, args) -> list[tuple[str, str, bool]]:
    """(flag, path, is_file) of every output flag of ``args`` that has a value (typed ``output_folder`` or
    ``output_file``)."""
    found = []
    for action in parser._actions:
        if action.type not in (output_folder, output_file) or not action.option_strings:
            continue
        values = getattr(args, action.dest, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                found.append((action.option_strings[0], str(value), action.type is output_file))
    return found


def check_outputs(args) -> None:
    """Refuse the first output path of ``args`` (noted by ``ArgumentParser``) that cannot be made: a file given as a
    folder, a folder given as a file, or a path inside a file. ``run_cli`` calls it before the command runs."""
    for flag, path, is_file in getattr(args, "_outputs", ()):
        problem = output_problem(path, flag, is_file=is_file)
        if problem:
            raise UserError(problem)


def prompt_text(text: str) -> str:
    """A prompt: text with at least one non-blank character (an empty value is refused, not read as "no value")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a prompt with words, got {text!r}")
    return text


def existing_file(text: str) -> str:
    """A path to a file that exists."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"is a folder, not a file: {text}")
    return text


def nonempty_file(text: str) -> str:
    """A path to a file that exists and has at least one non-blank line (a prompt file)."""
    existing_file(text)
    try:
        lines = Path(text).expanduser().read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror}") from None
    if not any(line.strip() for line in lines):
        raise argparse.ArgumentTypeError(f"{text} is empty: give a file with one prompt per line")
    return text


def sdxl_prog(console_name: str) -> str:
    """The program name of an SDXL entry point: the script's own name when run as a file (``*_sdxl.py``),
    else its console-script name, so ``--help`` and errors name the SDXL command, not the SD one."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if "sdxl" in script else console_name


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line on stderr, exit status 2, like ``run_cli``'s:
    ``error: argument --batch_size: must be a positive integer, got -3 (see PROG --help)``."""

    def parse_known_args(self, args=None, namespace=None):
        """argparse's; the parsed args also note their output paths (``_outputs``) for ``check_outputs``."""
        namespace, extras = super().parse_known_args(args, namespace)
        outputs = output_flags(self, namespace)
        if outputs:  # only then: a parser without output flags gives the args it always gave (toy/train.py: vars)
            namespace._outputs = outputs
        return namespace, extras

    def error(self, message):
        self.exit(2, f"error: {' '.join(str(message).split())} (see {self.prog} --help)\n")
