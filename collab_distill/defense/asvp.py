"""ASVP, Adaptive Singular Value Perturbation: a run-time defense of a released teacher against
unauthorised distillation (Hu, Zheng, Lyu, "Defense against Unauthorized Distillation in Image
Restoration via Feature Space Perturbation", arXiv 2510.08925).

Each sample's feature tensor is read as a matrix ``A``: a ``(B, C, H, W)`` map as ``C x (H*W)``,
a ``(B, N, D)`` token sequence as ``N x D``. With ``A = U diag(sigma) V^T``
(``sigma_1 >= sigma_2 >= ...``) ASVP returns

    A' = U diag(h sigma_1, ..., h sigma_k, sigma_{k+1}, ...) V^T  =  A + (h - 1) U_k U_k^T A,

i.e. the top-``k`` singular values are multiplied by ``h`` and everything else is unchanged. The
right-hand form is what is computed, on the short side of ``A`` (``U_k U_k^T A`` or, the same,
``A V_k V_k^T``): only the top-``k`` singular vectors are needed, the tail of the spectrum is never
rebuilt (so it is untouched up to the accuracy of ``U_k``), and with ``h = 1`` the correction is
exactly zero.

``k`` is fixed (``k > 0``) or **adaptive** (``k = 0``), per sample, by an energy rule: the smallest
``k`` whose singular values hold at least ``energy`` of the squared Frobenius norm,

    k = min { k : sigma_1^2 + ... + sigma_k^2 >= energy * ||A||_F^2 },  clamped to [1, max_k],

so a feature map dominated by one direction gets ``k = 1`` and a flat spectrum gets a larger
``k``. (The paper says "adaptive" without the rule; this one is the project's choice.)

Placements (:class:`ASVPDefense`): ``inline`` replaces the layer outputs inside the teacher's
forward pass, so the perturbation propagates to the teacher's output; ``exposed`` leaves the
teacher's forward pass clean and perturbs only the copies of the layer outputs handed to a
distiller (:meth:`ASVPDefense.forward_exposed`).

Numerics: computed in float32 (float64 inputs stay float64), returned in the input dtype. The
subspace ``U_k`` is computed without gradient; gradients flow through the linear map
``A -> (I + (h - 1) U_k U_k^T) A`` (the derivative of the subspace itself needs
``1 / (sigma_i^2 - sigma_j^2)`` and is undefined for repeated singular values, e.g. dead ReLU
channels).
"""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

Placement = Literal["inline", "exposed"]
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)  # the order the studies report them in
UNDEFENDED = "undefended"  # the studies' label of the teacher without the defense
Solver = Literal["svd", "gram", "lowrank"]
View = Literal["channels", "spatial"]


@dataclass
class ASVPConfig:
    """What ASVP perturbs and how.

    ``solver``: ``svd`` is ``torch.linalg.svd`` (LAPACK on the tall orientation), ``gram`` the
    eigenvectors of the small Gram matrix ``A A^T`` (same subspace, about 2x faster on the study's
    shapes, fp32 accuracy of ``sigma_i^2``), ``lowrank`` ``torch.svd_lowrank`` with
    ``q = rank + lowrank_oversample`` (randomised, approximate; needs ``k > 0`` or ``max_k > 0``).
    ``bench/asvp.py`` compares them.
    """

    layers: list[str] = field(default_factory=list)   # names in teacher.named_modules()
    placement: Placement = "exposed"
    view: View = "channels"         # (B, C, H, W) as C x HW per sample, or "spatial": H x W per channel
    h: float = 2.0                  # factor on the top-k singular values (> 0; > 1 amplifies)
    k: int = 0                      # > 0: fixed rank; 0: adaptive (energy rule)
    energy: float = 0.9             # adaptive: share of ||A||_F^2 the top-k singular values must hold
    max_k: int = 0                  # adaptive: cap on k (0: no cap)
    solver: Solver = "svd"
    lowrank_oversample: int = 4
    lowrank_iters: int = 2

    def __post_init__(self) -> None:
        if not self.h > 0:
            raise ValueError(f"ASVP: h must be > 0, got {self.h}")
        if self.k < 0 or self.max_k < 0:
            raise ValueError(f"ASVP: k and max_k must be >= 0, got k={self.k}, max_k={self.max_k}")
        if not 0 < self.energy <= 1:
            raise ValueError(f"ASVP: energy must be in (0, 1], got {self.energy}")
        if self.solver == "lowrank" and self.k == 0 and self.max_k == 0:
            raise ValueError("ASVP: solver 'lowrank' needs a fixed k or a max_k")


@dataclass
class Spectrum:
    """Top singular directions of a batch of matrices ``A (B, m, n)``, on their short side.

    Attributes:
        basis: ``(B, s, q)``, ``s = min(m, n)``: orthonormal singular vectors of the short side
            (left ones when ``m <= n``, right ones otherwise), by decreasing singular value.
        sigma: ``(B, q)`` singular values, decreasing (``q = s`` except for ``lowrank``).
        rank: ``(B,)`` int64, the ``k`` chosen for each matrix (``1 <= k <= q``).
    """

    basis: Tensor
    sigma: Tensor
    rank: Tensor


def as_matrices(x: Tensor, view: View = "channels") -> Tensor:
    """The matrices ASVP decomposes: ``(B, C, H, W)`` -> ``(B, C, H*W)`` (``channels``) or
    ``(B*C, H, W)`` (``spatial``); ``(B, N, D)`` tokens stay ``(B, N, D)`` (``channels`` only).

    Raises:
        ValueError: another rank, or the ``spatial`` view of a token sequence (it has no grid).
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"ASVP expects (B, C, H, W) maps or (B, N, D) tokens, got shape {tuple(x.shape)}")
    if view == "spatial":
        if x.ndim != 4:
            raise ValueError(f"ASVP: the spatial view needs (B, C, H, W) maps, got shape {tuple(x.shape)}")
        return x.flatten(0, 1)
    return x.flatten(2)


def adaptive_rank(sigma: Tensor, total: Tensor, energy: float, max_k: int) -> Tensor:
    """Per-sample ``k``: the fewest leading ``sigma`` (``(B, q)``, decreasing) whose squares reach
    ``energy * total`` (``total (B,)`` = squared Frobenius norm), clamped to ``[1, max_k or q]``.
    Returns ``(B,)`` int64."""
    cumulative = sigma.square().cumsum(-1)
    k = (cumulative < energy * total[:, None]).sum(-1) + 1
    return k.clamp(1, min(max_k or sigma.shape[-1], sigma.shape[-1]))


def _left_singular(a: Tensor, cfg: ASVPConfig) -> tuple[Tensor, Tensor]:
    """``(B, s, q)`` left singular vectors and ``(B, q)`` singular values of ``a (B, s, l)``, ``s <= l``."""
    if cfg.solver == "svd":
        _, sigma, vh = torch.linalg.svd(a.mT, full_matrices=False)   # a^T is tall: LAPACK's fast case
        return vh.mT, sigma
    if cfg.solver == "gram":
        eigval, eigvec = torch.linalg.eigh(a @ a.mT)                 # ascending
        return eigvec.flip(-1), eigval.flip(-1).clamp_min(0).sqrt()
    q = min((cfg.k or cfg.max_k) + cfg.lowrank_oversample, a.shape[-2])
    with torch.random.fork_rng(devices=[]):                          # deterministic, caller's RNG untouched
        torch.manual_seed(0)
        u, sigma, _ = torch.svd_lowrank(a, q=q, niter=cfg.lowrank_iters)
    return u, sigma


def short_side(a: Tensor) -> Tensor:
    """``a (B, m, n)`` as ``(B, s, l)`` with ``s <= l`` (transposed when ``m > n``; a view)."""
    return a.mT if a.shape[-2] > a.shape[-1] else a


@torch.no_grad()
def spectrum(a: Tensor, cfg: ASVPConfig) -> Spectrum:
    """Top singular directions of ``a (B, m, n)`` (float32/64) and the ``k`` of each matrix."""
    a = short_side(a)
    basis, sigma = _left_singular(a, cfg)
    if cfg.k:
        rank = torch.full(sigma.shape[:1], min(cfg.k, sigma.shape[-1]), dtype=torch.long, device=a.device)
    else:
        rank = adaptive_rank(sigma, a.square().sum((-2, -1)), cfg.energy, cfg.max_k)
    return Spectrum(basis, sigma, rank)


def perturb(x: Tensor, cfg: ASVPConfig) -> Tensor:
    """Multiply the top-``k`` singular values of each sample's feature matrix by ``cfg.h``.

    Args:
        x: ``(B, C, H, W)`` feature maps or ``(B, N, D)`` token sequences, any float dtype.
        cfg: ``h``, ``k`` or the adaptive rule, ``view``, ``solver``.

    Returns:
        Same shape and dtype as ``x``: ``A + (h - 1) U_k U_k^T A`` per matrix (projected on the
        short side, which gives the same result). Differentiable in ``x`` with the subspace held fixed.
    """
    matrices = as_matrices(x, cfg.view).to(torch.promote_types(x.dtype, torch.float32))
    a = short_side(matrices)
    spec = spectrum(a.detach(), cfg)
    keep = torch.arange(spec.basis.shape[-1], device=x.device) < spec.rank[:, None]
    basis = spec.basis * keep[:, None, :]
    out = a + (cfg.h - 1.0) * (basis @ (basis.mT @ a))
    if a.shape != matrices.shape:
        out = out.mT
    return out.reshape(x.shape).to(x.dtype)


@dataclass
class DefendedOutput:
    """What :meth:`ASVPDefense.forward_exposed` returns.

    Attributes:
        output: the teacher's own return value (computed from perturbed features with the
            ``inline`` placement, from clean ones with ``exposed``).
        features: layer name -> the perturbed output of that layer, shape and dtype of the layer's
            output (``(B, C, H, W)`` or ``(B, N, D)``): what a feature distiller gets to match.
    """

    output: Any
    features: dict[str, Tensor]


class ASVPDefense(nn.Module):
    """Wraps any ``nn.Module`` teacher and perturbs the outputs of the layers ``cfg.layers``.

    Hooks are registered for the duration of a call only; the wrapped teacher is left as it was.
    Each named layer must return one tensor, ``(B, C, H, W)`` or ``(B, N, D)``, and run once per
    forward pass.

    Args:
        teacher: the model to defend (its own ``forward`` signature and return value are kept).
        cfg: layers, placement, ``h``, ``k`` / adaptive rule, solver.

    Raises:
        KeyError: a layer name that ``teacher.named_modules()`` does not have.
        TypeError, RuntimeError (during a call): a named layer returned something other than one
            tensor, or ran twice in one forward pass.
    """

    def __init__(self, teacher: nn.Module, cfg: ASVPConfig) -> None:
        super().__init__()
        modules = dict(teacher.named_modules())
        for name in cfg.layers:
            if name not in modules:
                near = difflib.get_close_matches(name, list(modules), n=3)
                raise KeyError(f"ASVP: teacher has no layer {name!r}" + (f" (did you mean {near}?)" if near else ""))
        self.teacher = teacher
        self.cfg = cfg

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The teacher's return value: from perturbed features (``inline``) or the plain teacher
        forward (``exposed``: no hook runs, the output is the teacher's bit for bit)."""
        if self.cfg.placement == "exposed":
            return self.teacher(*args, **kwargs)
        return self.forward_exposed(*args, **kwargs).output

    def forward_exposed(self, *args: Any, **kwargs: Any) -> DefendedOutput:
        """The teacher's return value and the perturbed features of ``cfg.layers``."""
        with self._hooks() as features:
            output = self.teacher(*args, **kwargs)
        return DefendedOutput(output, features)

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[dict[str, Tensor]]:
        """Hooks on ``cfg.layers`` for the block; yields the dict they fill with perturbed outputs."""
        features: dict[str, Tensor] = {}
        modules = dict(self.teacher.named_modules())
        handles = [modules[name].register_forward_hook(self._make_hook(name, features)) for name in self.cfg.layers]
        try:
            yield features
        finally:
            for handle in handles:
                handle.remove()

    def _make_hook(self, name: str, features: dict[str, Tensor]) -> Callable[..., Tensor | None]:
        """A forward hook that stores the perturbed output of ``name`` (and returns it when ``inline``)."""
        inline = self.cfg.placement == "inline"

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor | None:
            if not isinstance(output, Tensor):
                raise TypeError(f"ASVP: layer {name!r} returned {type(output).__name__}, not a tensor")
            if name in features:
                raise RuntimeError(f"ASVP: layer {name!r} ran twice in one forward pass; pick a layer that runs once")
            features[name] = perturb(output, self.cfg)
            return features[name] if inline else None

        return hook
