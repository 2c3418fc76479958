"""``method.name`` -> method class."""
from __future__ import annotations

from collab_distill.config import RunConfig
from collab_distill.methods.base import Method


def build_method(cfg: RunConfig) -> Method:
    """Instantiate the method named in ``cfg.method.name``."""
    name = cfg.method.name
    if name == "stage1":
        from collab_distill.methods.stage1 import Stage1

        return Stage1(cfg)
    if name == "teacher_pretrain":
        from collab_distill.methods.teacher_pretrain import TeacherPretrain

        return TeacherPretrain(cfg)
    if name == "stage2":
        from collab_distill.methods.stage2 import Stage2

        return Stage2(cfg)
    from collab_distill.methods.image_distill import ImageDistill

    return ImageDistill(cfg)
