#!/usr/bin/env python
"""Print the resolved config (file + base files + overrides) as YAML, or a one-line error.

Any config under configs/ works: its schema (run, probe, lidar_probe, synthetic, asvp_study, demo) is
named by the file's `schema:` key.

Examples:
  python tools/show_config.py --config configs/base.yaml optim.lr=1e-4
  python tools/show_config.py --config configs/probe/seg_linear.yaml train.iterations=2000
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import yaml

import data_prep.synthetic.config  # noqa: F401 (registers the `synthetic` schema)
from collab_distill.cli import ToolParser, add_config_args, user_errors
from collab_distill.config import config_to_dict, load_config


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    add_config_args(parser)
    args = parser.parse_args(argv)
    with user_errors(args.debug):
        cfg = load_config(args.config, args.overrides, schema=None)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")


if __name__ == "__main__":
    main()
