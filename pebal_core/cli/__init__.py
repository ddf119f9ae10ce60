"""The ``pebal`` command: one entry point for the offline tools.

Each group of sub-commands is a module of this package (:mod:`~pebal_core.cli.models`: ``models``
and ``checkpoint``; :mod:`~pebal_core.cli.predict`; :mod:`~pebal_core.cli.evaluation`: ``eval`` and
``threshold``; :mod:`~pebal_core.cli.export`; :mod:`~pebal_core.cli.train`;
:mod:`~pebal_core.cli.synth`; :mod:`~pebal_core.cli.mask`) with, per sub-command, a one-line help and two
functions: ``add_<name>(parser)`` declares its arguments and ``run_<name>(args)`` calls into the module
that does the work; this module assembles the parser. Only the invoked sub-command's arguments are
declared (some need torch for their choices), so ``pebal --help`` and the parsing of any command line
start without loading torch. Errors a user can fix (missing files, bad checkpoints, bad configs)
are printed as one ``pebal: error: ...`` line with exit status 2, not as a traceback (set
``PEBAL_DEBUG=1`` to get the traceback).
"""

from __future__ import annotations

import argparse
import sys

from pebal_core.cli import evaluation, export, mask, models, predict, synth, train
from pebal_core.cli.errors import UserError, user_errors
from pebal_core.console import run_reporting_errors
from pebal_core.version import __version__

COMMANDS = {
    **models.COMMANDS,
    **predict.COMMANDS,
    **export.COMMANDS,
    **evaluation.COMMANDS,
    **mask.COMMANDS,
    **train.COMMANDS,
    **synth.COMMANDS,
}
"""Sub-command name -> (one-line help, declare its arguments, run it), in the order ``pebal --help`` lists them."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``pebal`` parser; the arguments of ``command`` only (the others' help lines are listed)."""
    parser = argparse.ArgumentParser(
        prog="pebal",
        description=(
            "PEBAL anomaly segmentation (Tian et al., ECCV 2022): train, evaluate, export and run "
            "energy-based anomaly segmenters for Cityscapes-style road scenes."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pebal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if name == command:
            add(p)
    return parser


def _run_command(args: argparse.Namespace) -> int:
    from pebal_core.models.checkpoint import MissingArchitectureError

    try:
        return COMMANDS[args.command][2](args)
    except MissingArchitectureError as e:  # the Python API's arch= is the command line's --arch
        raise UserError(str(MissingArchitectureError(e.path, e.source_format, how="pass --arch NAME"))) from e


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return run_reporting_errors("pebal", lambda: _run_command(args), user_errors())
