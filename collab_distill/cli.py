"""The command line of every tool in ``tools/``: one parser, one config convention, one error line.

The convention, the same in every tool:

- ``--config FILE`` names the YAML config (never positional); positional ``key=value`` arguments
  override it (dotted keys, YAML values: ``optim.lr=1e-4 data.cameras=[CAM_FRONT]``);
- ``--out`` is always a folder;
- every expected error (a :class:`~collab_distill.errors.UserError`, a bad argument) is one line
  ``error: ...`` on stderr and exit code 2; ``--debug`` shows its traceback instead;
- ``--help`` shows examples.

The tools are thin: they parse with :class:`ToolParser`, load the config with :func:`add_config_args`'s
arguments, and run the library inside :func:`user_errors`. The training tools are :func:`train_main`,
the image probes :func:`probe_main`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn, Sequence

from collab_distill.config import ConfigError, RunConfig, load_config, resolve_config_path
from collab_distill.errors import UserError

ERROR_PREFIX = "error: "
OVERRIDE_HELP = "dotted overrides applied after the file, e.g. optim.lr=1e-4 data.cameras=[CAM_FRONT]"


class ToolParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` for a tool: the description is shown as written (examples
    keep their layout), ``--debug`` is always there, positional ``key=value`` overrides may stand
    before, between or after the options, and a bad argument is one ``error: ...`` line, exit code 2
    (argparse would print the usage first)."""

    def __init__(self, description: str, **kwargs: Any) -> None:
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="on an error, show the full traceback instead of one line")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """:meth:`parse_intermixed_args`: ``a=1 --config F b=2`` gives ``overrides == ["a=1", "b=2"]``."""
        return self.parse_intermixed_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message> (see <tool> --help)`` and exit 2."""
        self.exit(2, f"{ERROR_PREFIX}{message} (see {self.prog} --help)\n")


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None, what: str = "YAML config",
                    required: bool | None = None) -> None:
    """Add ``--config FILE`` and the positional ``key=value`` overrides. ``--config`` is required unless
    it has a ``default`` or ``required=False`` (then ``args.config`` is None: the schema's defaults).
    A ``--config`` that names no file is a bad argument, answered before any work or heavy import."""
    parser.add_argument("--config", metavar="FILE", default=default, type=_config_file,
                        required=default is None if required is None else required,
                        help=f"{what} (may inherit with `base: file.yaml`)"
                             + (" (default: %(default)s)" if default else ""))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDE_HELP)


def _config_file(text: str) -> str:
    """``--config``'s type: ``text`` unchanged when it names a config file, as given or shipped
    (:func:`~collab_distill.config.resolve_config_path`); else :class:`argparse.ArgumentTypeError`."""
    try:
        resolve_config_path(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn a :class:`UserError` into ``error: <its one line>`` on stderr and exit code 2 (``debug``: re-raise it).

    Every tool runs its work inside this; it is the only place a tool reports an expected error."""
    try:
        yield
    except UserError as exc:
        if debug:
            raise
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(verbose: bool = False) -> None:
    """Plain ``time LEVEL name: message`` logging to stderr for the tools."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def with_flags(flags: dict[str, str | None], overrides: Sequence[str]) -> list[str]:
    """``key=value`` overrides for the convenience flags that were given (``{"experiment.name": "x"}``),
    then the positional ``overrides`` (which win)."""
    return [f"{key}={value}" for key, value in flags.items() if value is not None] + list(overrides)


def command_line(tool: str, argv: list[str] | None) -> list[str]:
    """The command as typed, for a run's record: ``[tool, *arguments]`` (``argv`` None: this process's)."""
    return [tool, *(sys.argv[1:] if argv is None else argv)]


# --------------------------------------------------------------------------------------------
# Training: tools/train.py and its aliases tools/train_<group>.py
# --------------------------------------------------------------------------------------------
TRAIN_EXAMPLES = """
Examples (one process, or many with accelerate):
  python tools/{tool} --config {config} [key=value ...]
  python tools/{tool} --config {config} train.max_steps=200 --resume auto
  accelerate launch --multi_gpu --num_processes 4 tools/{tool} --config {config}
  ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tools/{tool} --config {config}

train.batch_size is the total batch over processes and accumulation steps. Outputs (config.yaml,
run.json, metrics.jsonl, tb/, checkpoints/, weights/*.safetensors) go to experiment.output_dir, which
must be empty unless --resume auto (continue its run) or --overwrite (replace it) is given.
"""


def train_main(doc: str, tool: str, group: str | None = None, default_method: str | None = None,
               argv: list[str] | None = None) -> None:
    """The whole command line of ``tools/train.py`` (``group`` None: any registered method, ``--config``
    required) or of an alias ``tools/train_<group>.py`` (the methods of ``group`` in the registry; the
    default config is ``default_method``'s, else the group's first method's): parse, load, train, report."""
    from collab_distill.methods.registry import METHODS, method_names

    runs = method_names(group)
    default = METHODS[default_method or runs[0]].default_config if group else None
    methods = "".join(f"\n  {name:16s} {METHODS[name].summary}\n  {'':16s} --config {METHODS[name].default_config}"
                      for name in runs)
    examples = TRAIN_EXAMPLES.format(tool=tool, config=default or METHODS[runs[0]].default_config)
    parser = ToolParser(f"{doc}\n\nMethods (method.name in the config):{methods}\n{examples}")
    add_config_args(parser, default, "YAML run config")
    parser.add_argument("--resume", default="", metavar="auto|DIR",
                        help="'auto': continue from the newest valid checkpoint of the output folder (a damaged "
                             "one is skipped with a warning); or a checkpoint folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output folder; the old run is kept until the new one has "
                             "finished")
    args = parser.parse_args(argv)
    setup_logging()
    with user_errors(args.debug):
        cfg = load_config(args.config, args.overrides, schema=RunConfig)
        if cfg.method.name not in runs:
            raise ConfigError(f"{args.config}: method.name={cfg.method.name!r}; {tool} runs {', '.join(runs)} "
                              "(tools/train.py runs any method)")
        from collab_distill.engine.run import run_training  # torch: once the config is valid

        result = run_training(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{cfg.method.name}: {result.steps} steps, last loss {result.last_logs.get('loss', float('nan')):.4f}, "
          f"outputs in {result.out_dir}")


# --------------------------------------------------------------------------------------------
# Image probes: tools/probe_seg.py and tools/probe_depth.py
# --------------------------------------------------------------------------------------------
PROBE_EXAMPLES = """
Examples:
  python tools/{tool} --encoder runs/stage2/weights/student.safetensors
  python tools/{tool} --name teacher                # the teacher itself (model.image.weights)
  python tools/{tool} --encoder W.safetensors train.iterations=2000 data.image_size=[224,448]
  python tools/{tool} --encoder W.safetensors data.conditions=[clear] --out runs/probes_clear_train
                                                    # train on clear only, test on all (robustness gap)
  python tools/{tool} --encoder W.safetensors folder.root=/data/my_set ...   # a folder set (docs/probes.md)

Writes <experiment.output_dir>/<name>/{task}.json (metrics per condition, the recipe, the config),
{task}_config.yaml and {task}_showcase.safetensors; tools/report.py collects them.
"""


def add_result_args(parser: argparse.ArgumentParser, default_name: str, result_path: str) -> None:
    """The arguments of a tool that writes one named result: ``--name`` (experiment.name; its default is
    ``default_name``), ``--out`` (experiment.output_dir, a folder; the result goes to ``result_path``),
    ``--overwrite`` and ``--no-progress``."""
    parser.add_argument("--name", help=f"result name (experiment.name; default: {default_name})")
    parser.add_argument("--out", metavar="FOLDER", help=f"output folder (experiment.output_dir); the result goes "
                                                        f"to {result_path}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result of the same name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def probe_main(doc: str, tool: str, task: str, default_config: str, argv: list[str] | None = None) -> None:
    """Parse, load the probe config (refused when it is another task's), run the probe, print a one-line
    summary; expected errors are one line, exit 2."""
    parser = ToolParser(doc + "\n" + PROBE_EXAMPLES.format(tool=tool, task=task))
    add_config_args(parser, default_config, "probe config YAML")
    parser.add_argument("--encoder", help="weights to probe: a run's weights/student.safetensors or a ViT "
                                          "checkpoint (default: the teacher, model.image.weights)")
    parser.add_argument("--teacher", help="teacher weights (model.image.weights): fidelity reference")
    add_result_args(parser, "the run folder of --encoder, or 'teacher'", "OUT/NAME/")
    args = parser.parse_args(argv)
    setup_logging()
    overrides = with_flags({"encoder": args.encoder, "model.image.weights": args.teacher,
                            "experiment.name": args.name, "experiment.output_dir": args.out}, args.overrides)
    with user_errors(args.debug):  # config, info, weights, an existing result: one line
        from collab_distill.probe.config import ProbeConfig, ProbeError  # torch
        from collab_distill.probe.run import run_probe

        cfg = load_config(args.config, overrides, schema=ProbeConfig)
        if cfg.task != task:
            raise ProbeError(f"{args.config} is a '{cfg.task}' probe config; {tool} runs '{task}' probes")
        result = run_probe(cfg, progress=not args.no_progress, command=command_line(tool, argv),
                           overwrite=args.overwrite)
    if result:  # under accelerate launch, only the main process trains the head and has a result
        print(probe_summary(result))


def probe_summary(result: dict[str, Any]) -> str:
    """``seg teacher (linear): miou % all 41.20 | clear 45.00 | night 30.10 ... -> OUT/NAME/seg.json``."""
    key, scale, unit = ("miou", 100, " %") if result["task"] == "seg" else ("rmse", 1, " m")
    parts = [f"{g} {v[key] * scale:.2f}" for g, v in result["results"].items() if v.get(key) is not None]
    return (f"{result['task']} {result['name']} ({result['protocol']}): {key}{unit} " + " | ".join(parts)
            + f" -> {result['config']['experiment']['output_dir']}/{result['name']}/{result['task']}.json")
