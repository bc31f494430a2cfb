"""The ``ptq-bounds`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``
(the exit code); this file only wires them together, importing each module when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "verify": ("verify.commands.verify_cmd", "run a verification campaign (default: the built-in Monte Carlo campaign)"),
    "check-layer": ("verify.commands.check_layer", "check every applicable claim on your own layer (W, X[, X_tilde])"),
    "audit": ("verify.commands.audit", "audit your own quantizer MODULE:FUNCTION against the claims"),
    "figures": ("figures.command", "draw the verification figures from stored results"),
    "paper-checks": ("verify.commands.paper_checks", "regenerate paper_checks.md from the claims and stored results"),
    "export": ("verify.commands.export", "export a campaign's verdicts from the store as CSV or JSON"),
    "bench": ("verify.bench", "time OPTQ against the BLAS-3 floor on this machine and store the results"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptq-bounds",
        description="Check the error bounds of OPTQ (GPTQ) and Qronos post-training quantization.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in SUBCOMMANDS.items():
        try:
            mod = _module(module)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not part of this build
            if exc.name != module:
                raise
            continue
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(_module=module)
        mod.add_arguments(sp)
    return p


def _module(name):
    return importlib.import_module(name)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept and a re-run continues from it", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
