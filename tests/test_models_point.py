"""Point encoder (spconv sparse UNet): shapes, gradients, order independence, guard, algorithm, SyncBN."""
from __future__ import annotations

import pytest
import spconv.pytorch as spconv
import torch
from spconv.pytorch.conv import SparseConvolution
from torch import nn

from collab_distill.data.voxelize import Voxels, voxelize
from collab_distill.models import HeadConfig, PointEncoderConfig, ProjectionHead
from collab_distill.models.frozen import FrozenModuleError
from collab_distill.models.point_encoder import PointEncoder
from collab_distill.models.sparse_layers import spconv_algo, sync_algo

COUNTS = (1500, 2500)
VOXEL = 0.1


def scene(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 5)`` LiDAR-like points: a 6x6 m ground patch and a wall, x, y, z in metres, intensity, time lag."""
    on_wall = torch.rand(n, generator=gen) < 0.3
    x = torch.rand(n, generator=gen) * 6 - 3
    y = torch.where(on_wall, torch.full((n,), 2.5), torch.rand(n, generator=gen) * 6 - 3)
    z = torch.where(on_wall, torch.rand(n, generator=gen) * 2 - 1.7, torch.full((n,), -1.7))
    xyz = torch.stack([x, y, z], dim=1) + torch.randn(n, 3, generator=gen) * 0.02
    return torch.cat([xyz, torch.rand(n, 1, generator=gen), torch.rand(n, 1, generator=gen) * 0.45], dim=1)


@pytest.fixture(scope="module")
def points() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.cat([scene(n, gen) for n in COUNTS])


@pytest.fixture(scope="module")
def voxels(points) -> Voxels:
    return voxelize(points, torch.tensor(COUNTS).cumsum(0), VOXEL)


@pytest.fixture
def encoder() -> PointEncoder:
    torch.manual_seed(0)
    return PointEncoder(PointEncoderConfig())


def test_per_point_features_have_the_output_width(encoder, voxels):
    out = encoder(voxels)
    assert out.shape == (sum(COUNTS), encoder.out_channels) == (4000, 32)
    assert torch.isfinite(out).all()


def test_point_index_reads_the_same_rows_and_gradients(encoder, voxels):
    index = torch.randperm(sum(COUNTS), generator=torch.Generator().manual_seed(2))[:700]
    encoder.train()
    full = encoder(voxels)[index]
    grads_full = torch.autograd.grad(full.square().sum(), list(encoder.parameters()))
    some = encoder(voxels, index)
    grads_some = torch.autograd.grad(some.square().sum(), list(encoder.parameters()))
    torch.testing.assert_close(some, full, atol=0, rtol=0)
    for a, b in zip(grads_some, grads_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_gradients_reach_every_parameter_of_encoder_and_head(encoder, voxels):
    head = ProjectionHead(HeadConfig(kind="mlp"), encoder.out_channels, 64)
    loss = head(encoder.train()(voxels)).pow(2).mean()
    loss.backward()
    params = list(encoder.named_parameters()) + [(f"head.{n}", p) for n, p in head.named_parameters()]
    missing = [n for n, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_output_is_permutation_equivariant(encoder, points, voxels):
    offsets = torch.tensor(COUNTS).cumsum(0)
    gen = torch.Generator().manual_seed(1)
    perm = torch.cat([torch.randperm(COUNTS[0], generator=gen), COUNTS[0] + torch.randperm(COUNTS[1], generator=gen)])
    encoder.eval()
    with torch.no_grad():
        permuted = encoder(voxelize(points[perm], offsets, VOXEL))
        torch.testing.assert_close(permuted, encoder(voxels)[perm], atol=1e-5, rtol=1e-4)


def test_frozen_point_encoder(encoder, voxels):
    encoder.freeze()
    with pytest.raises(FrozenModuleError):
        encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert not encoder(voxels).requires_grad


def test_algorithm_follows_the_input_device(encoder, voxels):
    convs = [m for m in encoder.modules() if isinstance(m, SparseConvolution)]
    assert convs and all(m.algo == spconv.ConvAlgo.Native for m in convs)
    assert spconv_algo("cuda:0") == spconv.ConvAlgo.MaskImplicitGemm
    sync_algo(encoder, "cuda")
    assert all(m.algo == spconv.ConvAlgo.MaskImplicitGemm for m in convs)
    encoder(voxels)                                                         # CPU input: switched back to Native
    assert all(m.algo == spconv.ConvAlgo.Native for m in convs)


def test_batchnorm_converts_to_syncbatchnorm(encoder):
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in encoder.modules())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    assert n_bn > 0
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == n_bn
    assert not any(isinstance(m, nn.BatchNorm1d) for m in converted.modules())


def test_inconsistent_config_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        PointEncoder(PointEncoderConfig(enc_widths=[16, 32], enc_depths=[1], dec_widths=[16, 16], dec_depths=[1, 1]))
    with pytest.raises(ValueError, match="at most 4 stages"):
        PointEncoder(PointEncoderConfig(enc_widths=[8] * 5, enc_depths=[1] * 5, dec_widths=[8] * 5, dec_depths=[1] * 5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_runs_under_amp(encoder, points):
    offsets = torch.tensor(COUNTS).cumsum(0)
    on_gpu = voxelize(points.cuda(), offsets.cuda(), VOXEL)
    encoder.eval()
    with torch.no_grad():
        cpu = encoder(voxelize(points, offsets, VOXEL))
        gpu = encoder.cuda()(on_gpu)
    assert all(m.algo == spconv.ConvAlgo.MaskImplicitGemm for m in encoder.modules()
               if isinstance(m, SparseConvolution))
    assert (gpu.cpu() - cpu).norm() <= 1e-2 * cpu.norm()                    # implicit GEMM may use TF32
    encoder.train()
    with torch.autocast("cuda", dtype=torch.float16):
        out = encoder(on_gpu)
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_spunet_sized_config_runs(voxels):
    cfg = PointEncoderConfig(stem_width=32, enc_widths=[32, 64, 128, 256], enc_depths=[2, 3, 4, 6],
                             dec_widths=[256, 128, 96, 96], dec_depths=[2, 2, 2, 2])
    encoder = PointEncoder(cfg)
    assert 30e6 < sum(p.numel() for p in encoder.parameters()) < 45e6     # Pointcept's SpUNet-v1m1 scale
    with torch.no_grad():
        assert encoder.eval()(voxels).shape == (sum(COUNTS), 96)
