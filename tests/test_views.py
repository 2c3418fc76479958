"""The image-only methods' views: the batched, seeded degradation on the images' device against the
per-image path it replaces (same outputs on the CPU), determinism per seed, independence from the batch."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_degrade import synthetic_images

from collab_distill.data.degrade import CPU_CHUNK, available_image_degradations
from collab_distill.methods.views import degraded_view, jittered_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from degrade_batch import per_image_view  # the per-image path it replaced, which the bench also times

NAMES = available_image_degradations()


def _batch(images: torch.Tensor, epoch: int = 3) -> dict:
    """A batch of ``I`` images, two cameras per sample (the keys the views read)."""
    count = len(images)
    return {"images": images, "image_sample": torch.arange(count) // 2, "epoch": epoch,
            "tokens": [f"token{s}" for s in range((count + 1) // 2)],
            "cameras": ["CAM_FRONT" if i % 2 == 0 else "CAM_BACK" for i in range(count)]}


def _sub_batch(batch: dict, rows: list[int]) -> dict:
    """The images ``rows`` of ``batch`` as a batch of their own (same tokens and cameras)."""
    samples = sorted({int(batch["image_sample"][r]) for r in rows})
    return {"images": batch["images"][rows], "epoch": batch["epoch"],
            "image_sample": torch.tensor([samples.index(int(batch["image_sample"][r])) for r in rows]),
            "tokens": [batch["tokens"][s] for s in samples], "cameras": [batch["cameras"][r] for r in rows]}


@pytest.mark.parametrize("severity", [2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_batched_view_equals_the_per_image_path(name, severity):
    batch = _batch(synthetic_images(CPU_CHUNK + 2, 40, 72))          # a group of more than one chunk
    batched = degraded_view(batch, [name], [severity], seed=5, view="student")
    reference = per_image_view(batch, [name], [severity], seed=5, view="student")
    assert batched.shape == reference.shape and batched.dtype == torch.float32
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=0)
    assert not torch.equal(batched, batch["images"])


def test_mixed_names_and_severities_equal_the_per_image_path():
    batch = _batch(synthetic_images(12, 32, 48))
    batched = degraded_view(batch, NAMES, [1, 3, 5], seed=0, view="teacher")
    torch.testing.assert_close(batched, per_image_view(batch, NAMES, [1, 3, 5], 0, "teacher"), atol=1e-5, rtol=0)


def test_views_are_deterministic_per_seed_and_view():
    batch = _batch(synthetic_images(8, 32, 48))
    names = ["rain", "gaussian_noise", "night", "fog", "motion_blur"]
    first = degraded_view(batch, names, [2, 4], seed=1, view="student")
    assert torch.equal(first, degraded_view(batch, names, [2, 4], seed=1, view="student"))   # bit for bit
    assert not torch.equal(first, degraded_view(batch, names, [2, 4], seed=2, view="student"))
    assert not torch.equal(first, degraded_view(batch, names, [2, 4], seed=1, view="teacher"))
    assert not torch.equal(first, degraded_view({**batch, "epoch": 4}, names, [2, 4], seed=1, view="student"))
    jitter = jittered_view(batch, 0.2, seed=1, view="student")
    assert torch.equal(jitter, jittered_view(batch, 0.2, seed=1, view="student"))
    assert not torch.equal(jitter, jittered_view(batch, 0.2, seed=2, view="student"))


def test_a_view_does_not_depend_on_the_batch_composition():
    batch = _batch(synthetic_images(8, 32, 48))
    names = ["rain", "snow", "shot_noise", "impulse_noise", "fog"]
    whole = degraded_view(batch, names, [3, 5], seed=4, view="student")
    for rows in ([0, 1, 2], [7, 3, 5, 6], [4]):
        part = degraded_view(_sub_batch(batch, rows), names, [3, 5], seed=4, view="student")
        assert torch.equal(part, whole[rows]), rows
