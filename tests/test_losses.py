"""Stage-1 losses: ScaLR's normalised L2 (``√(2 − 2 cos)`` over all pairs) next to the per-sample cosine."""
from __future__ import annotations

import pytest
import torch

from collab_distill.config import ConfigError, load_config
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance, grouped_mean, normalized_l2
from collab_distill.methods.common import pair_samples
from collab_distill.methods.stage1 import Stage1
from collab_distill.models import sample_features

SMALL = ["model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.max_points=1500",
         "data.cameras=[all]", "model.point.stem_width=8", "model.point.enc_widths=[8,16]",
         "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]", "model.point.dec_depths=[1,1]",
         "data.voxel_size=0.5"]


def test_normalized_l2_is_sqrt_of_two_minus_two_cos():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 24, generator=gen) * torch.rand(500, 1, generator=gen) * 10
    b = torch.randn(500, 24, generator=gen)
    b[:50] = -a[:50]  # opposite directions: distance 2
    reference = torch.sqrt(2 - 2 * torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1))
    torch.testing.assert_close(normalized_l2(a, b).double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(normalized_l2(a, b), torch.sqrt(2 * cosine_distance(a, b)), rtol=1e-4, atol=1e-4)


def test_normalized_l2_gradient_is_finite_where_the_features_coincide():
    """√ of 0 has an infinite derivative: coincident (or parallel) pairs must not give inf/NaN."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(8, 16, generator=gen, requires_grad=True)
    b = torch.cat([a.detach()[:4], 3 * a.detach()[4:6], torch.randn(2, 16, generator=gen)])  # same, parallel, other
    dist = normalized_l2(a, b)
    dist.sum().backward()
    assert torch.isfinite(a.grad).all()
    assert torch.equal(dist[:6], torch.zeros(6)) and torch.equal(a.grad[:6], torch.zeros(6, 16))
    # away from coincidence it is the gradient of √(2 − 2 cos), computed in float64
    a64 = a.detach()[6:].double().requires_grad_()
    torch.sqrt(2 - 2 * torch.nn.functional.cosine_similarity(a64, b[6:].double(), dim=-1)).sum().backward()
    torch.testing.assert_close(a.grad[6:].double(), a64.grad, rtol=1e-4, atol=1e-6)


def test_stage1_loss_option_reduces_as_documented(textured_infos_dir):
    """``cosine_per_sample``: mean of per-sample means of 1 − cos; ``scalr_l2``: mean over all pairs of
    ‖k − q‖₂ (the samples of the batch hold different numbers of pairs, so the two reductions differ)."""
    losses = {}
    for kind in ("cosine_per_sample", "scalr_l2"):
        cfg = load_config("configs/stage1/synthetic.yaml",
                          [f"data.info_dir={textured_infos_dir}", *SMALL, f"method.stage1_loss={kind}"])
        torch.manual_seed(0)
        method = Stage1(cfg).train(False)
        dataset = PairedDataset(cfg.data, seed=0, train=False)
        batch = Collate(cfg.data.voxel_size)([dataset[0], dataset[1]])
        with torch.no_grad():
            out = method(batch)
            target = sample_features(method.teacher_maps(batch), batch["pair_uv"], batch["pair_image"],
                                     method.teacher.patch_size)
            feats = method.head(method.point_encoder(Voxels.from_batch(batch), batch["pair_point"]))
        owner = pair_samples(batch)
        assert torch.bincount(owner).unique().numel() == 2, "the test needs samples with different pair counts"
        losses[kind] = (out.loss, feats, target, owner)
    loss, feats, target, owner = losses["cosine_per_sample"]
    torch.testing.assert_close(loss, grouped_mean(cosine_distance(feats, target), owner, 2))
    loss, feats, target, _ = losses["scalr_l2"]
    torch.testing.assert_close(loss, torch.sqrt(2 * cosine_distance(feats, target)).mean(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="'method.stage1_loss' must be one of"):
        load_config(None, ["method.stage1_loss=l2"])
