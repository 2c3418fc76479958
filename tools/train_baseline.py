#!/usr/bin/env python
"""Image-only baselines (no LiDAR), chosen by method.name in the config.

An alias of tools/train.py for the registry's baseline group (collab_distill/methods/registry.py);
the default config is asymmetric's."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_baseline.py", group="baseline", default_method="asymmetric")
