"""Training methods (stage 1, stage 2, image-only baselines) chosen by ``method.name``."""
