"""The command line shared by ``tools/probe_seg.py`` and ``tools/probe_depth.py``."""
from __future__ import annotations

import argparse
import sys

from collab_distill.cli import setup_logging
from collab_distill.config import load_config
from collab_distill.errors import UserError
from collab_distill.probe.config import ProbeConfig, ProbeError

USAGE = """
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
OVERRIDES = "config overrides, e.g. train.iterations=2000 data.conditions=[clear] head.blocks=[-4,-3,-2,-1]"


def probe_main(doc: str, tool: str, task: str, default_config: str, argv: list[str] | None = None) -> None:
    """Parse, load the config, run the probe, print a one-line summary; errors are one line, exit 2."""
    parser = argparse.ArgumentParser(description=doc + "\n" + USAGE.format(tool=tool, task=task),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help="probe config YAML (default: %(default)s)")
    parser.add_argument("--encoder", help="weights to probe: a run's weights/student.safetensors or a ViT "
                                          "checkpoint (default: the teacher, model.image.weights)")
    parser.add_argument("--teacher", help="teacher weights (model.image.weights): fidelity reference")
    parser.add_argument("--name", help="result label (default: the run folder of --encoder, or 'teacher')")
    parser.add_argument("--out", help="output folder (experiment.output_dir); results go to OUT/NAME/")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result of the same name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES)
    args = parser.parse_args(argv)
    setup_logging()
    flags = {"encoder": args.encoder, "model.image.weights": args.teacher, "experiment.name": args.name,
             "experiment.output_dir": args.out}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    from collab_distill.probe.run import run_probe

    try:
        cfg = load_config(args.config, overrides, schema=ProbeConfig)
        if cfg.task != task:
            raise ProbeError(f"{args.config} is a '{cfg.task}' probe config; {tool} runs '{task}' probes")
        result = run_probe(cfg, progress=not args.no_progress, command=[tool, *(argv or sys.argv[1:])],
                           overwrite=args.overwrite)
    except (UserError, FileNotFoundError) as exc:  # config, info, weights, existing result: one line
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary_line(result))


def summary_line(result: dict) -> str:
    """``seg teacher (linear): all mIoU 41.2 % | clear 45.0 | night 30.1 ...`` for the terminal."""
    key, scale, unit = ("miou", 100, " %") if result["task"] == "seg" else ("rmse", 1, " m")
    parts = [f"{g} {v[key] * scale:.2f}" for g, v in result["results"].items() if v.get(key) is not None]
    return (f"{result['task']} {result['name']} ({result['protocol']}): {key}{unit} " + " | ".join(parts)
            + f" -> {result['config']['experiment']['output_dir']}/{result['name']}/{result['task']}.json")
