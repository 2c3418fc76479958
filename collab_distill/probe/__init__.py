"""Linear probes on frozen image encoders (DINOv2 protocols), per condition, and feature fidelity.

Modules: ``config`` (schema), ``data`` (views with dense targets), ``encoder`` (loading, features),
``features`` (precomputed bank), ``heads`` (heads, depth losses), ``metrics`` (mIoU, depth errors),
``train`` (loop, per-condition evaluation), ``fidelity``, ``showcase``, ``results`` (JSON schema),
``run`` (one run from a config), ``lidar`` (the 3D probe); the tools' command line is
:mod:`collab_distill.cli`. See docs/probes.md.
"""
from .config import ProbeConfig, ProbeError
from .metrics import ConfusionMatrix, DepthMetrics

__all__ = ["ConfusionMatrix", "DepthMetrics", "ProbeConfig", "ProbeError"]
