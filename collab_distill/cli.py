"""Helpers shared by the thin command-line tools in ``tools/``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TypeVar

from collab_distill.config import ConfigError, RunConfig, load_config

T = TypeVar("T")

OVERRIDE_HELP = "dotted overrides applied after the file, e.g. optim.lr=1e-4 data.cameras=[CAM_FRONT]"


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """Add ``config`` (YAML path) and ``overrides`` (``key=value`` ...) positional arguments."""
    parser.add_argument("config", nargs="?" if default else None, default=default,
                        help="YAML config (may inherit with `base: file.yaml`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDE_HELP)


def config_from_args(args: argparse.Namespace, schema: type[T] = RunConfig) -> T:  # type: ignore[assignment]
    """Load the config named in ``args``; on a :class:`ConfigError` print its one line and exit 2."""
    try:
        return load_config(Path(args.config) if args.config else None, args.overrides, schema)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(verbose: bool = False) -> None:
    """Plain ``LEVEL message`` logging to stderr for the tools."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
