"""The ``crosslocate`` command line: global options, logging setup and error handling.

This is the only place that configures logging. Every :class:`~crosslocate.errors.CrosslocateError`
becomes exit code 2 with a one-line message (the traceback only with ``-vv``); so does an
``OSError`` meaning the disk is full (``ENOSPC``, ``EDQUOT``, ``EFBIG``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from crosslocate import __version__
from crosslocate.errors import CrosslocateError
from crosslocate.fileio import DISK_FULL_ERRNOS
from crosslocate.pipelines.commands import COMMANDS

logger = logging.getLogger("crosslocate")


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity <= 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("distributed", "numba", "matplotlib", "PIL", "trimesh", "h5py"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def build_parser() -> argparse.ArgumentParser:
    """The root parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="crosslocate",
        description="Rendered DEM databases and cross-modal visual geo-localization in mountains.",
    )
    parser.add_argument("--version", action="version", version=f"crosslocate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output (-vv: debug + tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crosslocate`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else args.verbose
    _setup_logging(verbosity)
    try:
        code: int = args.func(args)
    except CrosslocateError as exc:
        if verbosity >= 2:
            logger.exception("failed")
        print(f"crosslocate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk outside crosslocate's own writers: still one line, not a traceback
        if exc.errno not in DISK_FULL_ERRNOS:  # ENOSPC, EDQUOT, EFBIG
            raise
        print(f"crosslocate {args.command}: error: disk full: {exc}; free space and rerun", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
