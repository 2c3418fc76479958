"""Probe heads: the depth head's bin normalisation and expectation, the depth losses, and that the
sparse seg loss reads exactly the bilinearly upsampled logits the evaluation reads."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from collab_distill.data.taxonomy import IGNORE
from collab_distill.probe.heads import DepthHead, LinearHead, bin_weights, expected_depth, gradient_loss, sig_loss
from collab_distill.probe.train import upsample_to, values_at_pixels


def test_linear_bin_normalisation_and_expectation_hand_computed():
    weights = bin_weights(torch.tensor([-1.0, 0.0, 0.9]).view(1, 3, 1, 1))
    assert weights.flatten().tolist() == pytest.approx([0.1, 0.1, 1.0])
    # p = (0.1, 0.1, 1.0) / 1.2 over centres (2, 4, 10)
    want = (0.1 * 2 + 0.1 * 4 + 1.0 * 10) / 1.2
    assert float(expected_depth(weights, torch.tensor([2.0, 4.0, 10.0]))) == pytest.approx(want)


def test_expected_depth_over_uniform_bins():
    head = DepthHead(in_dim=2, num_bins=5, min_depth=1.0, max_depth=9.0, upsample=1)
    assert head.centres.tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    # all logits <= 0: every bin weighs eps -> the mean of the centres
    assert float(expected_depth(bin_weights(-torch.ones(1, 5, 1, 1)), head.centres)) == pytest.approx(5.0)
    # one strong bin k: (eps * sum(c) + L * c_k) / (5 eps + L)
    logits = torch.zeros(1, 5, 1, 1)
    logits[0, 3] = 9.9
    want = (0.1 * 25 + 9.9 * 7.0) / (0.5 + 9.9)
    assert float(expected_depth(bin_weights(logits), head.centres)) == pytest.approx(want)
    # the head computes exactly this from its 1x1 conv
    torch.nn.init.zeros_(head.linear.conv.weight)
    head.linear.conv.bias.data = logits.flatten()
    assert head(torch.randn(1, 2, 1, 1)).item() == pytest.approx(want)


def test_depth_head_shape_range_and_no_batchnorm():
    head = DepthHead(in_dim=8, num_bins=16, min_depth=0.5, max_depth=80.0, upsample=4)
    out = head(torch.randn(2, 8, 3, 5) * 50)
    assert out.shape == (2, 12, 20)
    assert out.min() >= 0.5 and out.max() <= 80.0
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in head.modules())


def test_conv_before_upsampling_equals_the_protocol_order():
    torch.manual_seed(0)
    head = LinearHead(6, 4, batch_norm=False, upsample=4)
    head.conv.weight.data.normal_()
    head.conv.bias.data.normal_()
    x = torch.randn(2, 6, 3, 5)
    protocol = head.conv(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))
    torch.testing.assert_close(head(x), protocol, atol=1e-5, rtol=1e-5)


def test_sparse_seg_logits_equal_upsampled_logits_at_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 8)
    label = torch.full((2, 56, 112), IGNORE, dtype=torch.uint8)
    rows, cols = torch.randint(0, 56, (300,)), torch.randint(0, 112, (300,))
    label[torch.arange(300) % 2, rows, cols] = torch.randint(0, 5, (300,)).to(torch.uint8)
    image, row, col = (label != IGNORE).nonzero(as_tuple=True)
    values = values_at_pixels(logits, image, row * 112 + col, (56, 112))
    dense = upsample_to(logits, (56, 112)).permute(0, 2, 3, 1)[label != IGNORE]
    torch.testing.assert_close(values, dense, atol=1e-5, rtol=1e-5)


def test_depth_losses_are_scale_aware_as_intended():
    torch.manual_seed(0)
    gt = torch.rand(2, 20, 30) * 40 + 1
    valid = torch.rand(2, 20, 30) > 0.3
    gt = torch.where(valid, gt, 0.0)
    # SigLoss of a global scale c: sqrt(0.15) * |log c| (variance term 0), up to the log epsilon
    assert float(sig_loss(gt * 2, gt, valid)) == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-3)
    assert float(sig_loss(gt, gt, valid)) == pytest.approx(0.0, abs=1e-6)
    # gradient loss ignores a global scale, not a local error
    assert float(gradient_loss(gt * 3, gt, valid)) == pytest.approx(0.0, abs=1e-3)
    noisy = gt * (1 + 0.3 * torch.rand_like(gt))
    assert float(gradient_loss(noisy, gt, valid)) > 0.05
    # nothing valid: zero loss with a gradient path, no NaN
    none = torch.zeros_like(valid)
    pred = (gt + 1).requires_grad_()
    total = sig_loss(pred, gt, none) + gradient_loss(pred, gt, none)
    total.backward()
    assert total.item() == 0.0 and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("size_in,size_out", [((9, 18), (36, 72)), ((9, 18), (126, 252)), ((7, 5), (20, 13))])
def test_separable_resize_equals_bilinear_interpolate(size_in, size_out):
    from collab_distill.probe.heads import resize_bilinear

    x = torch.randn(2, 3, *size_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    assert torch.allclose(resize_bilinear(x, size_out), expected, atol=1e-12)


def test_sparse_gradient_loss_equals_the_dense_one_at_every_stride():
    from collab_distill.probe.heads import sparse_gradient_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 25, 37, generator=g) * 30 + 1, torch.rand(3, 25, 37, generator=g) * 50 + 1
    for density in (0.05, 0.5, 1.0):       # sparse LiDAR-like to every pixel (pairs at the borders too)
        valid = torch.rand(3, 25, 37, generator=g) < density
        image, row, col = valid.nonzero(as_tuple=True)
        sparse = sparse_gradient_loss(pred[valid], target[valid], image, row * 37 + col, (25, 37))
        torch.testing.assert_close(sparse, gradient_loss(pred, target, valid), atol=1e-5, rtol=1e-5)
    shuffled = torch.randperm(len(image), generator=g)   # any pixel order
    torch.testing.assert_close(sparse_gradient_loss(pred[valid][shuffled], target[valid][shuffled], image[shuffled],
                                                    (row * 37 + col)[shuffled], (25, 37)),
                               gradient_loss(pred, target, valid), atol=1e-5, rtol=1e-5)
