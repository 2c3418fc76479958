"""Defenses of released models against unauthorised distillation: ASVP (docs/asvp.md).

Modules: ``asvp`` (the perturbation and the teacher wrapper), ``encoder_study`` (the defense on a
ViT encoder, scored with the linear probe), ``restoration/`` (the restoration test bed: UNet, paired
data, metrics, attacker distillation, the restoration part), ``study`` (``tools/asvp_study.py``: data,
both parts, tables). Every ASVP piece is in this package.
"""
from .asvp import (
    PLACEMENTS,
    UNDEFENDED,
    ASVPConfig,
    ASVPDefense,
    DefendedOutput,
    Placement,
    Solver,
    Spectrum,
    View,
    adaptive_rank,
    as_matrices,
    perturb,
    short_side,
    spectrum,
)

__all__ = ["PLACEMENTS", "UNDEFENDED", "ASVPConfig", "ASVPDefense", "DefendedOutput", "Placement", "Solver",
           "Spectrum", "View", "adaptive_rank", "as_matrices", "perturb", "short_side", "spectrum"]
