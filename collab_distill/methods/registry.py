"""The one list of training methods: ``method.name`` -> class, config section, group and default config.

Everything that names methods derives from :data:`METHODS`: the names the config accepts (and the
dataclass of each ``method:`` section), ``tools/train.py`` and its ``tools/train_<group>.py`` aliases,
and the demo pipeline's baselines. This module is light: it imports the config dataclasses only; a
method's module (torch, timm, spconv) is imported by :func:`build_method` when it is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from collab_distill.errors import ConfigError
from collab_distill.methods.config import (
    ImageDistillConfig,
    MethodSection,
    Stage1Config,
    Stage2Config,
    TeacherPretrainConfig,
    TeacherSSLConfig,
)

if TYPE_CHECKING:
    from collab_distill.config import RunConfig
    from collab_distill.methods.base import Method

MethodGroup = Literal["teacher", "stage1", "stage2", "baseline"]


@dataclass(frozen=True)
class MethodEntry:
    """One method: where its class is, its ``method:`` section, its group and its shipped config."""

    target: str                   # "module:Class", imported when the method is built
    config: type[MethodSection]   # the dataclass of its ``method:`` section
    group: MethodGroup            # teacher, stage1, stage2 or baseline (one tools/train_<group>.py alias each)
    default_config: str           # the shipped config that runs it
    summary: str                  # one line for --help and the docs


_IMAGE_DISTILL = "collab_distill.methods.image_distill:ImageDistill"
METHODS: dict[str, MethodEntry] = {
    "teacher_pretrain": MethodEntry(
        "collab_distill.methods.teacher_pretrain:TeacherPretrain", TeacherPretrainConfig, "teacher",
        "configs/teacher/synthetic.yaml", "clear-weather teacher ViT: lidarseg class and log depth at LiDAR points"),
    "teacher_ssl": MethodEntry(
        "collab_distill.methods.teacher_ssl:TeacherSSL", TeacherSSLConfig, "teacher", "configs/teacher/ssl.yaml",
        "label-free clear-weather teacher ViT: DINO + iBOT self-distillation, masked pixels; images only (no LiDAR)"),
    "stage1": MethodEntry(
        "collab_distill.methods.stage1:Stage1", Stage1Config, "stage1", "configs/stage1/synthetic.yaml",
        "the LiDAR encoder learns the frozen teacher's features at projected pixels (clear scenes)"),
    "stage2": MethodEntry(
        "collab_distill.methods.stage2:Stage2", Stage2Config, "stage2", "configs/stage2/synthetic.yaml",
        "a 2D student anchored to the frozen stage-1 LiDAR features, on all conditions"),
    "teacher_plus": MethodEntry(
        _IMAGE_DISTILL, ImageDistillConfig, "baseline", "configs/baselines/teacher_plus.yaml",
        "image-only control: two photometrically jittered views, no weather, no LiDAR"),
    "asymmetric": MethodEntry(
        _IMAGE_DISTILL, ImageDistillConfig, "baseline", "configs/baselines/asymmetric.yaml",
        "image-only: a clean-image teacher, a degraded-image student"),
    "self_distill": MethodEntry(
        _IMAGE_DISTILL, ImageDistillConfig, "baseline", "configs/baselines/self_distill.yaml",
        "image-only: two independently degraded views"),
}


def method_names(group: str | None = None) -> tuple[str, ...]:
    """The registered method names (registry order), or those of ``group``."""
    return tuple(name for name, entry in METHODS.items() if group is None or entry.group == group)


def method_entry(name: str) -> MethodEntry:
    """The entry of method ``name``.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the valid names).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method.name {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def method_class(name: str) -> type[Method]:
    """The class of method ``name`` (its module is imported here), e.g. to read its class attributes
    before building it.

    Raises:
        ConfigError: the name is not registered.
    """
    module, _, cls = method_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_method(cfg: RunConfig) -> Method:
    """Instantiate the method named in ``cfg.method.name`` (its module is imported here).

    Raises:
        ConfigError: the name is not registered, or ``cfg.method`` is not that method's section
            (a config built in code with another method's dataclass).
    """
    return method_class(cfg.method.name)(cfg)
