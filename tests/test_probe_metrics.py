"""Probe metrics against hand-computed cases: mIoU with absent / predicted-only classes and ignore
index, depth errors with delta edge cases, per-image averaging."""
from __future__ import annotations

import math

import pytest
import torch

from collab_distill.probe.metrics import ConfusionMatrix, DepthMetrics


def test_miou_counts_classes_in_ground_truth_or_prediction():
    cm = ConfusionMatrix(num_classes=5, ignore_index=255)
    #          gt: 0  0  1  1  2  255(ignored); class 4 is neither in the ground truth nor predicted
    cm.update(torch.tensor([0, 1, 1, 1, 3, 2]), torch.tensor([0, 0, 1, 1, 2, 255]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2)      # tp 1, fn 1
    assert iou[1] == pytest.approx(2 / 3)      # tp 2, fp 1
    assert iou[2] == 0.0                       # present, never right (predicted as 3)
    assert iou[3] == 0.0                       # predicted once, absent from the ground truth: IoU 0
    assert math.isnan(iou[4])                  # absent from both: left out
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4)
    assert cm.accuracy() == pytest.approx(3 / 5)
    assert cm.total == 5 and cm.present.tolist() == [True, True, True, True, False]


def test_a_predicted_only_class_lowers_the_miou():
    """mmseg / nuScenes devkit: a false positive of a class missing from the ground truth costs IoU 0."""
    target = torch.tensor([0, 0, 1, 1])
    perfect, spurious = ConfusionMatrix(3), ConfusionMatrix(3)
    perfect.update(target, target)
    spurious.update(torch.tensor([0, 2, 1, 1]), target)   # one class-0 pixel predicted as absent class 2
    assert perfect.miou() == 1.0
    assert spurious.miou() == pytest.approx((1 / 2 + 1 + 0) / 3)  # without class 2 it would be 0.75


def test_ignore_index_is_skipped_whatever_the_prediction():
    cm = ConfusionMatrix(3, ignore_index=7)
    cm.update(torch.tensor([[2, 2], [0, 1]]), torch.tensor([[7, 7], [0, 1]]))
    assert cm.miou() == 1.0 and cm.total == 2


def test_merge_equals_one_update_and_bad_labels_raise():
    pred, target = torch.randint(0, 5, (2, 300)), torch.randint(0, 5, (2, 300))
    whole, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(pred, target)
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    a.merge(b)
    assert torch.equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(5).update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="elements"):
        ConfusionMatrix(5).update(torch.tensor([0, 1]), torch.tensor([0]))
    assert math.isnan(ConfusionMatrix(5).miou())


def test_depth_metrics_hand_computed_with_delta_edges():
    m = DepthMetrics()
    # ratios 1, 1.25 (exactly on the threshold: not within delta1), 2; the 0 target is ignored
    m.update(torch.tensor([1.0, 5.0, 4.0, 3.0]), torch.tensor([1.0, 4.0, 2.0, 0.0]))
    out = m.compute()
    assert out["rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    assert out["abs_rel"] == pytest.approx((0 + 0.25 + 1) / 3)
    assert out["delta1"] == pytest.approx(1 / 3)
    assert out["delta2"] == pytest.approx(2 / 3)   # 1.25 < 1.5625
    assert out["delta3"] == pytest.approx(2 / 3)   # 2 > 1.953125
    assert m.images == 1 and m.pixels == 3


def test_depth_metrics_average_images_and_reject_non_positive_predictions():
    m = DepthMetrics()
    m.update(torch.tensor([2.0]), torch.tensor([1.0]))                       # abs_rel 1, delta1 0
    m.update(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))   # abs_rel 0, delta1 1
    m.update(torch.tensor([5.0]), torch.tensor([float("nan")]))              # no valid pixel: skipped
    out = m.compute()
    assert out["abs_rel"] == pytest.approx(0.5) and out["delta1"] == pytest.approx(0.5)  # per image, not per pixel
    assert m.images == 2
    bad = DepthMetrics()
    bad.update(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0]))
    assert bad.compute()["delta3"] == 0.0
    assert math.isnan(DepthMetrics().compute()["rmse"])
