"""Training a restoration teacher, distilling students from it as an attacker would, and scoring them.

The attacker has no clean targets: it queries the (possibly defended) teacher on degraded crops and
trains a smaller student on the teacher's output (L1) plus its intermediate features at the layers
the released model exposes (FitNets: a 1x1 adapter from the student's width to the teacher's and a
squared error, relative ``||adapter(s) - t||^2 / ||t||^2`` or the plain mean ``(adapter(s) - t)^2``).
Several students train in lockstep on the same batches from the same initialisation, so they differ
only in what their teachers return.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collab_distill.defense.asvp import DefendedOutput
from collab_distill.defense.restoration.data import PairedImages, random_crops
from collab_distill.defense.restoration.metrics import psnr, ssim
from collab_distill.ranges import PositiveFloat, PositiveInt

#: A teacher as the attacker sees it: degraded images ``(B, 3, H, W)`` -> output and exposed features.
Source = Callable[[Tensor], DefendedOutput]


@dataclass
class TrainSettings:
    """One training run: Adam with a cosine decay to 5 % of ``lr``, random aligned crops."""

    steps: PositiveInt = 300
    batch: PositiveInt = 8
    crop: PositiveInt = 48
    lr: PositiveFloat = 2e-3


@contextlib.contextmanager
def record_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, the outputs of ``model``'s submodules ``names`` (autograd graph kept)."""
    outputs: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out)) for n in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def plain_source(teacher: nn.Module, layers: Sequence[str]) -> Source:
    """The undefended teacher: its output and its clean features at ``layers``."""
    def query(images: Tensor) -> DefendedOutput:
        with record_outputs(teacher, layers) as features:
            output = teacher(images)
        return DefendedOutput(output, dict(features))

    return query


def _optimiser(params: list[nn.Parameter], settings: TrainSettings
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and its per-step cosine decay from ``lr`` to 5 % of it."""
    opt = torch.optim.Adam(params, lr=settings.lr)

    def decay(step: int) -> float:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, decay)


def train_restorer(model: nn.Module, pairs: PairedImages, settings: TrainSettings, seed: int) -> float:
    """Supervised L1 training on ``pairs``; returns the mean loss of the last 10 % of steps."""
    generator = torch.Generator().manual_seed(seed)
    opt, sched = _optimiser(list(model.parameters()), settings)
    model.train()
    losses = []
    for _ in range(settings.steps):
        crops = random_crops(pairs, settings.crop, settings.batch, generator)
        loss = F.l1_loss(model(crops.degraded), crops.clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return sum(losses[-max(1, len(losses) // 10):]) / max(1, len(losses) // 10)


class Attacker(nn.Module):
    """A student plus one 1x1 adapter per distilled layer (student width -> teacher width)."""

    def __init__(self, student: nn.Module, layers: Sequence[str], student_dims: Sequence[int],
                 teacher_dims: Sequence[int]) -> None:
        super().__init__()
        self.student = student
        self.layers = list(layers)
        self.adapters = nn.ModuleDict({n.replace(".", "_"): nn.Conv2d(s, t, 1)
                                       for n, s, t in zip(layers, student_dims, teacher_dims)})

    def loss(self, images: Tensor, target: DefendedOutput, feature_weight: float, relative: bool) -> Tensor:
        """L1 to the teacher's output plus ``feature_weight`` times the summed feature errors (mean
        squared error, divided by the target's mean square when ``relative``)."""
        with record_outputs(self.student, self.layers) as feats:
            out = self.student(images)
        loss = F.l1_loss(out, target.output)
        for name in self.layers:
            t = target.features[name]
            s = self.adapters[name.replace(".", "_")](feats[name])
            scale = t.square().mean().clamp_min(1e-12) if relative else 1.0
            loss = loss + feature_weight * (s - t).square().mean() / scale
        return loss


def distill_lockstep(attackers: dict[str, Attacker], sources: dict[str, Source], pairs: PairedImages,
                     settings: TrainSettings, feature_weight: float, relative: bool, seed: int) -> dict[str, float]:
    """Train every ``attackers[name]`` on ``sources[name]``'s answers to the same degraded crops.

    Returns the mean loss of the last 10 % of steps per attacker.
    """
    generator = torch.Generator().manual_seed(seed)
    optimisers = {name: _optimiser(list(a.parameters()), settings) for name, a in attackers.items()}
    losses: dict[str, list[float]] = {name: [] for name in attackers}
    for attacker in attackers.values():
        attacker.train()
    for _ in range(settings.steps):
        images = random_crops(pairs, settings.crop, settings.batch, generator).degraded
        for name, attacker in attackers.items():
            with torch.no_grad():
                target = sources[name](images)
            loss = attacker.loss(images, target, feature_weight, relative)
            opt, sched = optimisers[name]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[name].append(loss.item())
    tail = max(1, settings.steps // 10)
    for attacker in attackers.values():
        attacker.eval()
    return {name: sum(v[-tail:]) / tail for name, v in losses.items()}


@torch.no_grad()
def evaluate(restore: Callable[[Tensor], Tensor], pairs: PairedImages, batch: int) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``restore(degraded)`` against ``clean`` over all test pairs."""
    scores_p, scores_s = [], []
    for start in range(0, len(pairs.degraded), batch):
        out = restore(pairs.degraded[start:start + batch])
        target = pairs.clean[start:start + batch]
        scores_p.append(psnr(out, target))
        scores_s.append(ssim(out, target))
    return {"psnr": torch.cat(scores_p).mean().item(), "ssim": torch.cat(scores_s).mean().item()}
