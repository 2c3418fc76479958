"""The evaluation-only corruption set: disjoint from every training degradation and condition, seeded
per view (deterministic, independent of the batch), and each corruption doing what it says."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from collab_distill.data.conditions import CONDITION_TAGS, WEATHERS
from collab_distill.data.corruptions import Corruption, available_eval_corruptions, corrupt_images
from collab_distill.data.degrade import available_image_degradations
from collab_distill.methods.config import ImageDistillConfig


def _smooth(count: int = 4, seed: int = 0) -> torch.Tensor:
    """``(count, 3, 56, 112)`` smooth images (bilinear up-sampled noise), in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(count, 3, 7, 14, generator=g) * 0.8 + 0.1, size=(56, 112), mode="bilinear")


def test_the_set_is_disjoint_from_training_degradations_and_the_worlds_conditions():
    names = set(available_eval_corruptions())
    assert len(names) >= 3
    assert not names & set(available_image_degradations())  # what method.degradations may name
    assert set(ImageDistillConfig().degradations) <= set(available_image_degradations())
    assert not names & set(WEATHERS) and not names & set(CONDITION_TAGS)  # the world's weathers and night
    assert not any(w in n for n in names for w in (*WEATHERS, "night", "frost", "spatter"))


@pytest.mark.parametrize("name", available_eval_corruptions())
def test_each_corruption_changes_the_image_more_at_higher_severity_and_keeps_the_range(name):
    images = _smooth()
    errors = []
    for severity in (1, 3, 5):
        out = corrupt_images(images, name, severity, generator=0)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert 0 <= out.min() and out.max() <= 1
        errors.append((out - images).pow(2).mean().item())
    assert 0 < errors[0] < errors[1] < errors[2]


def test_a_corruption_is_deterministic_per_seed_and_per_view_whatever_the_batch():
    images = _smooth(4)
    speckle = Corruption("speckle_noise", 3, seed=7)
    batch = speckle(images, [10, 11, 12, 13])
    torch.testing.assert_close(speckle(images, [10, 11, 12, 13]), batch, rtol=0, atol=0)
    alone = torch.cat([speckle(images[i:i + 1], [10 + i]) for i in range(4)])
    torch.testing.assert_close(alone, batch)                       # a view's noise does not depend on its batch
    other_seed = Corruption("speckle_noise", 3, seed=8)(images, [10, 11, 12, 13])
    other_views = speckle(images, [20, 21, 22, 23])
    assert (other_seed - batch).abs().mean() > 0.01 and (other_views - batch).abs().mean() > 0.01
    assert speckle.identity() == {"name": "speckle_noise", "severity": 3, "seed": 7}


def test_pixelate_makes_blocks_and_zoom_blur_keeps_a_flat_image_and_the_centre():
    images = _smooth(2)
    blocks = corrupt_images(images, "pixelate", 5, generator=0)    # a quarter of each side kept: 4x4 blocks
    torch.testing.assert_close(blocks, blocks[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
    torch.testing.assert_close(blocks[..., ::4, ::4], F.avg_pool2d(images, 4))
    flat = torch.full((1, 3, 56, 112), 0.4)
    torch.testing.assert_close(corrupt_images(flat, "zoom_blur", 5, generator=0), flat)
    zoomed = corrupt_images(images, "zoom_blur", 5, generator=0)
    centre, edge = (slice(26, 30), slice(54, 58)), (slice(0, 4), slice(0, 4))
    assert ((zoomed - images)[..., centre[0], centre[1]].abs().mean()
            < (zoomed - images)[..., edge[0], edge[1]].abs().mean())


def test_bad_names_severities_and_shapes_are_refused():
    images = _smooth(1)
    with pytest.raises(ValueError, match="unknown evaluation degradation 'fog'; valid: speckle_noise"):
        corrupt_images(images, "fog", 3)
    with pytest.raises(ValueError, match="severity must be an integer"):
        corrupt_images(images, "pixelate", 6)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        corrupt_images(images[0], "pixelate", 3)
