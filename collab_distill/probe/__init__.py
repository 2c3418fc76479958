"""Linear probes on frozen image encoders (DINOv2 protocols), per condition, and feature fidelity.

Modules: ``config`` (schema), ``data`` (views and their targets), ``encoder`` (loading, features),
``store`` / ``store_build`` / ``stores`` (the on-disk probe feature store: files, build, which store a
run reads), ``heads`` (heads, depth losses), ``metrics`` (mIoU, depth errors), ``train`` (streaming
loop from a store, per-condition evaluation), ``fidelity``, ``showcase``, ``results`` (JSON schema),
``run`` (one run from a config), ``lidar`` / ``lidar_features`` / ``lidar_store`` (the 3D probe); the
tools' command line is :mod:`collab_distill.cli`. See docs/probes.md.
"""
from .config import ProbeConfig, ProbeError
from .metrics import ConfusionMatrix, DepthMetrics

__all__ = ["ConfusionMatrix", "DepthMetrics", "ProbeConfig", "ProbeError"]
