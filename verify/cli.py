"""The ``ptq-bounds`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``
(the exit code); this file only wires them together, importing each module when it is used.

Exit codes (one policy for every command, :data:`theory.verdicts.EXIT`): 0 every checked claim
holds; 1 a claim or hypothesis is violated; 2 bad input (argparse errors, and one line naming the
argument and the fix); 3 not exercised or insufficient evidence; 4 internal error (one line on
stderr; the traceback only with ``--debug``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

# name -> (module, one-line help)
SUBCOMMANDS = {
    "verify": ("verify.commands.verify_cmd", "run a verification campaign (default: the built-in Monte Carlo campaign)"),
    "check-layer": ("verify.commands.check_layer", "check every applicable claim on your own layer (W, X[, X_tilde])"),
    "capture": ("verify.commands.capture", "W, X, X̃ of a real model's linear layers (transformers: directory or GGUF)"),
    "audit": ("verify.commands.audit", "audit your own quantizer MODULE:FUNCTION against the claims"),
    "figures": ("figures.command", "draw the verification figures from stored results"),
    "paper-checks": ("verify.commands.paper_checks", "regenerate paper_checks.md from the claims and stored results"),
    "export": ("verify.commands.export", "export a campaign's verdicts from the store as CSV or JSON"),
    "tightness": ("verify.commands.tightness", "search each bound claim for its largest empirical/bound ratio"),
    "bench": ("verify.bench", "time OPTQ against the BLAS-3 floor on this machine and store the results"),
}

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
_DEBUG_HELP = "on an internal error, print the full traceback (exit code 4 either way)"
_EPILOG = ("exit codes: 0 every checked claim holds; 1 a claim or hypothesis is violated; 2 bad input; "
           "3 not exercised or insufficient evidence; 4 internal error (traceback with --debug)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptq-bounds",
        description="Check the error bounds of OPTQ (GPTQ) and Qronos post-training quantization.",
        epilog=_EPILOG,
    )
    p.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in SUBCOMMANDS.items():
        try:
            mod = _module(module)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not part of this build
            if exc.name != module:
                raise
            continue
        sp = sub.add_parser(name, help=help_, description=help_, epilog=_EPILOG)
        sp.set_defaults(_module=module)
        mod.add_arguments(sp)
        _accept_debug(sp)
    return p


def _accept_debug(sp) -> None:
    """``--debug`` after the subcommand too. Its default is SUPPRESS in the subparser, so that a
    ``--debug`` given before the subcommand is not reset (a command may declare its own)."""
    own = [a for a in sp._actions if "--debug" in a.option_strings]
    if own:
        for a in own:
            a.default = argparse.SUPPRESS
    else:
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


def package_version() -> str:
    """The installed version of provable-ptq (``unknown`` when it is not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "unknown"
    try:
        return version("provable-ptq")
    except PackageNotFoundError:
        return "unknown"


class BadInput(ValueError):
    """Bad input detected by a command: :func:`main` prints ``ptq-bounds COMMAND: MESSAGE`` (one line,
    naming the argument and the fix) and exits 2."""


# ------------------------------------------------------------------------------------------------
# argparse types shared by the commands: a bad value is an argparse error (usage + one line, exit 2)
# ------------------------------------------------------------------------------------------------
def open_unit_interval(s: str) -> float:
    """A probability strictly between 0 and 1 (``--alpha``, ``--eta``)."""
    try:
        x = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {s!r}") from None
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {s}")
    return x


def _int_at_least(lo: int, s: str) -> int:
    try:
        k = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ {lo}, got {s!r}") from None
    if k < lo:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ {lo}, got {k}")
    return k


def nonneg_int(s: str) -> int:
    """An integer ≥ 0 (``--seed``)."""
    return _int_at_least(0, s)


def positive_int(s: str) -> int:
    """An integer ≥ 1 (``--dpi``, ``--trials``)."""
    return _int_at_least(1, s)


def check_writable_file(path, option: str) -> None:
    """Raise :class:`BadInput` unless a file can be written at ``path`` (checked before any work is
    done, so that a long run does not fail at its very end). Nothing is left behind."""
    import os
    from pathlib import Path

    p = Path(path)
    fix = "give a file path in an existing, writable directory"
    if p.is_dir():
        raise BadInput(f"{option}: {path} is a directory; {fix}")
    parent = p.parent if str(p.parent) else Path(".")
    # the directory is created on writing (as the commands do); the nearest existing ancestor must be one
    anc = parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise BadInput(f"{option}: cannot write {path} ({anc} is not a directory); {fix}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise BadInput(f"{option}: cannot write {path} ({anc} is not writable); {fix}")
    if p.exists() and not os.access(p, os.W_OK):
        raise BadInput(f"{option}: cannot write {path} (the file is read-only); {fix}")


def check_writable_dir(path, option: str) -> None:
    """Raise :class:`BadInput` unless ``path`` is, or can be created as, a writable directory."""
    import os
    from pathlib import Path

    p = Path(path)
    fix = "give a directory that exists or can be created, and is writable"
    if p.exists() and not p.is_dir():
        raise BadInput(f"{option}: {path} exists and is not a directory; {fix}")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise BadInput(f"{option}: cannot create {path} ({anc} is not a directory); {fix}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise BadInput(f"{option}: cannot write in {path} ({anc} is not writable); {fix}")


def _module(name):
    return importlib.import_module(name)


def internal_error_line(exc: BaseException, *, debug: bool = False) -> str:
    """The one line printed for an internal error (exit code 4)."""
    msg = " ".join(str(exc).split())
    line = f"ptq-bounds: internal error: {type(exc).__name__}" + (f": {msg}" if msg else "")
    return line if debug else line + " (run with --debug for the traceback)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # argparse errors exit 2 (SystemExit passes through)
        debug = bool(getattr(args, "debug", False))
        return int(_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept and a re-run continues from it", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BadInput as exc:  # one line naming the argument and the fix
        cmd = getattr(args, "command", None)
        print(f"ptq-bounds{' ' + cmd if cmd else ''}: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a crash is never a violation: exit 4, the traceback only with --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(internal_error_line(exc, debug=debug), file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
