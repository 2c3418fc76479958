"""Helpers shared by the thin command-line tools in ``tools/``."""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

from collab_distill.config import ConfigError, RunConfig, load_config
from collab_distill.errors import UserError

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


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the traceback of an expected error instead of its one line."""
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")


@contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn a :class:`UserError` into its one line on stderr and exit code 2 (``debug``: re-raise it)."""
    try:
        yield
    except UserError as exc:
        if debug:
            raise
        print(f"{exc.label}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(verbose: bool = False) -> None:
    """Plain ``LEVEL message`` logging to stderr for the tools."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


TRAIN_USAGE = """
Usage (one process, or many with accelerate):
  python tools/{tool} --config CONFIG [key=value ...]
  accelerate launch --multi_gpu --num_processes 4 tools/{tool} --config CONFIG
  ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tools/{tool} --config CONFIG

train.batch_size is the total batch over processes and accumulation steps. Outputs (config.yaml,
run.json, metrics.jsonl, tb/, checkpoints/, weights/*.safetensors) go to experiment.output_dir, which
must be empty unless --resume auto (continue its run) or --overwrite (replace it) is given.
"""


def train_main(doc: str, tool: str, default_config: str, allowed: set[str]) -> None:
    """The whole command line of a ``tools/train_*.py``: parse, load the config, train, report."""
    from collab_distill.engine.run import run_training

    parser = argparse.ArgumentParser(description=doc + TRAIN_USAGE.format(tool=tool),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help="YAML run config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDE_HELP)
    parser.add_argument("--resume", default="", metavar="auto|DIR",
                        help="'auto': continue from the newest valid checkpoint of the output folder (a damaged "
                             "one is skipped with a warning); or a checkpoint folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output folder; the old run is kept until the new one has "
                             "finished")
    add_debug_arg(parser)
    args = parser.parse_args()
    setup_logging()
    cfg = config_from_args(args)
    if cfg.method.name not in allowed:
        print(f"config error: {args.config}: method.name={cfg.method.name!r}; {tool} runs {sorted(allowed)}",
              file=sys.stderr)
        raise SystemExit(2)
    with user_errors(args.debug):
        result = run_training(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{cfg.method.name}: {result.steps} steps, last loss {result.last_logs.get('loss', float('nan')):.4f}, "
          f"outputs in {result.out_dir}")
