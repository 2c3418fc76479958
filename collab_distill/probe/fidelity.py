"""Feature fidelity: how close the encoder's features on an adverse image are to the frozen
teacher's features on the clear render of the same view.

For every view with a reference (paired clear render; a clear view is its own reference, so the
``clear`` row measures how much of the teacher a fine-tuned encoder kept), per image: the mean over
patch positions of the cosine between the encoder's and the teacher's last-block tokens (after the
final norm), and the cosine of their CLS tokens. Averaged over images per condition tag and ``all``.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from collab_distill.models import ImageEncoder
from collab_distill.probe.data import ProbeView
from collab_distill.probe.train import ALL, GROUPS


@torch.no_grad()
def feature_fidelity(encoder: ImageEncoder, teacher: ImageEncoder, batches: Iterable[list[ProbeView]],
                     progress: bool = True) -> dict[str, dict[str, Any]]:
    """Per group: ``images``, ``patch_cosine``, ``cls_cosine`` (None where no view had a reference).

    Both encoders must return normed last-block patch maps (``cfg.norm``, block ``-1``).
    """
    sums = {group: [0, 0.0, 0.0] for group in GROUPS}
    for views in tqdm(batches, desc="fidelity", unit="batch", disable=not progress):
        views = [v for v in views if v.reference is not None]
        if not views:
            continue
        device = encoder.mean.device
        ours = encoder(torch.stack([v.image for v in views]).to(device), blocks=[-1])
        theirs = teacher(torch.stack([v.reference for v in views]).to(device), blocks=[-1])
        patch = F.cosine_similarity(ours.patch[0], theirs.patch[0], dim=1).flatten(1).mean(1).cpu()
        cls = F.cosine_similarity(ours.cls, theirs.cls, dim=1).cpu()
        for view, p, c in zip(views, patch.tolist(), cls.tolist()):
            for group in (*view.tags, ALL):
                sums[group][0] += 1
                sums[group][1] += p
                sums[group][2] += c
    return {group: {"images": n, "patch_cosine": p / n if n else None, "cls_cosine": c / n if n else None}
            for group, (n, p, c) in sums.items()}
