#!/usr/bin/env python
"""Print the resolved config (file + base files + overrides) as YAML, or a one-line error.

Example: python tools/show_config.py configs/base.yaml optim.lr=1e-4
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import argparse

import yaml

from collab_distill.cli import add_config_args, config_from_args
from collab_distill.config import config_to_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    cfg = config_from_args(parser.parse_args())
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")


if __name__ == "__main__":
    main()
