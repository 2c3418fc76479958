"""Voxelisation: every point in its voxel's cell, means, order independence, per-sample grids."""
from __future__ import annotations

import pytest
import torch

from collab_distill.data.voxelize import GRID_ALIGN, Voxels, offsets_to_batch, voxelize

VOXEL = 0.2


def make_batch(counts: tuple[int, ...] = (300, 500), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points with x, y in [-20, 20] m, z in [-2, 1] m, intensity in [0, 1], dense enough to share voxels."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(counts)
    xyz = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([4.0, 4.0, 3.0]) + torch.tensor([0.0, 0.0, -0.5])
    xyz = xyz * torch.tensor([10.0, 10.0, 1.0]).pow(torch.rand(n, 1, generator=gen).round())  # two densities
    points = torch.cat([xyz, torch.rand(n, 1, generator=gen)], dim=1)
    return points, torch.tensor(counts).cumsum(0)


def test_every_point_lies_in_the_cell_of_its_voxel():
    points, offsets = make_batch()
    vox = voxelize(points, offsets, VOXEL)
    batch = offsets_to_batch(offsets)
    coords = vox.coords[vox.inverse].long()                                 # (N, 4) b, z, y, x
    assert torch.equal(coords[:, 0], batch)
    world_cell = torch.floor(points[:, :3].double() / VOXEL).long()          # (N, 3) x, y, z
    shift = world_cell - coords[:, 1:].flip(1)                              # one grid shift per sample
    for b in range(len(offsets)):
        sample_shift = shift[batch == b]
        assert bool((sample_shift == sample_shift[0]).all())
        assert bool((sample_shift[0] % GRID_ALIGN == 0).all())


def test_voxel_features_are_the_mean_of_their_points_and_voxels_are_unique():
    points, offsets = make_batch()
    vox = voxelize(points, offsets, VOXEL)
    assert vox.coords.dtype == torch.int32 and vox.inverse.dtype == torch.int64
    assert len(torch.unique(vox.coords, dim=0)) == len(vox.coords) < len(points)   # some voxels hold several points
    for v in range(0, len(vox.coords), 37):
        torch.testing.assert_close(vox.features[v], points[vox.inverse == v].mean(0))
    assert bool((vox.coords[:, 1:] >= 0).all())
    assert bool((vox.coords[:, 1:] < torch.tensor(vox.spatial_shape, dtype=torch.int32)).all())
    assert all(s % GRID_ALIGN == 0 for s in vox.spatial_shape)


def test_voxelisation_is_permutation_equivariant():
    points, offsets = make_batch()
    gen = torch.Generator().manual_seed(1)
    perm = torch.cat([torch.randperm(300, generator=gen), 300 + torch.randperm(500, generator=gen)])
    a = voxelize(points, offsets, VOXEL)
    b = voxelize(points[perm], offsets, VOXEL)
    assert torch.equal(a.coords, b.coords)
    assert torch.equal(b.inverse, a.inverse[perm])
    torch.testing.assert_close(a.features, b.features)


def test_samples_are_voxelised_independently_of_the_batch():
    points, offsets = make_batch()
    both = voxelize(points, offsets, VOXEL)
    alone = voxelize(points[300:], torch.tensor([500]), VOXEL)
    second = both.coords[both.coords[:, 0] == 1]
    assert torch.equal(second[:, 1:], alone.coords[:, 1:])


def test_grid_is_world_anchored_up_to_the_alignment():
    points, offsets = make_batch(counts=(400,))
    points = points.double()                                                # exact enough to shift cells
    shifted = points.clone()
    shifted[:, :3] += torch.tensor([3.0, -5.0, 1.0]) * GRID_ALIGN * VOXEL   # whole multiples of the alignment
    a, b = voxelize(points, offsets, VOXEL), voxelize(shifted, offsets, VOXEL)
    assert torch.equal(a.coords, b.coords)


def test_empty_sample_and_bad_offsets():
    points, _ = make_batch(counts=(50,))
    vox = voxelize(points, torch.tensor([0, 50, 50]), VOXEL)
    assert vox.batch_size == 3 and set(vox.coords[:, 0].tolist()) == {1}
    with pytest.raises(ValueError, match="offsets must end at N=50"):
        voxelize(points, torch.tensor([10, 40]), VOXEL)
    with pytest.raises(ValueError, match=r"\(N, C>=3\)"):
        voxelize(points[:, :2], torch.tensor([50]), VOXEL)


def test_voxels_round_trip_through_a_collated_batch():
    points, offsets = make_batch()
    vox = voxelize(points, offsets, VOXEL)
    batch = {"offsets": offsets, "voxel_coords": vox.coords, "voxel_features": vox.features,
             "voxel_inverse": vox.inverse, "voxel_shape": torch.tensor(vox.spatial_shape)}
    got = Voxels.from_batch(batch)
    assert got.spatial_shape == vox.spatial_shape and isinstance(got.spatial_shape[0], int)
    assert got.batch_size == 2 and got.coords is vox.coords and got.inverse is vox.inverse
