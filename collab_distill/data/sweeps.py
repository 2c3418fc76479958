"""Multi-sweep LiDAR: a keyframe's points and its previous sweeps in the keyframe's LiDAR frame.

nuScenes records a LiDAR sweep every 50 ms and annotates one in ten (the keyframes, 2 Hz); the sweeps
before a keyframe are the ``prev`` chain of its LiDAR ``sample_data``, which prepare records
(:attr:`SampleInfo.sweeps <collab_distill.data.infos.SampleInfo>`, nearest first, each with its
``sweep2lidar``). :func:`aggregate_sweeps` gives what the devkit's
``LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps)`` gives
(``tests/test_sweeps.py`` compares them):

* the keyframe and up to ``nsweeps - 1`` previous sweeps (fewer when the chain is shorter: a scene's
  first keyframes), each mapped into the keyframe's LiDAR frame, keyframe first, then nearest first;
* a fifth column, the time lag ``Δt = t_keyframe - t_sweep`` in seconds (``>= 0``; 0 on the keyframe),
  the devkit's ``times``; the keyframe's time is the sample's timestamp, which is its LiDAR's;
* in every previous sweep, the points with ``|x| < min_distance`` and ``|y| < min_distance`` in the
  sweep's own LiDAR frame (before the transform) are removed, as the devkit's ``remove_close`` does
  (default 1 m: the ego vehicle's own returns).

One difference, on purpose: the keyframe's own points are all kept (the devkit applies
``remove_close`` to them too), so rows ``0 .. K-1`` are exactly the keyframe's file, its lidarseg
labels and its point-pixel pairs index them unchanged, and ``nsweeps = 1`` is the keyframe alone.
Sweep points have no labels (:func:`sweep_labels` gives them ``IGNORE``) and are never paired with
pixels: cameras fire at keyframe time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from collab_distill.data.infos import SampleInfo
from collab_distill.data.taxonomy import IGNORE

#: Sweep points closer than this (metres, in x and in y) to their LiDAR are dropped (the devkit's default).
MIN_DISTANCE = 1.0


def aggregate_sweeps(root: Path, info: SampleInfo, nsweeps: int, min_distance: float = MIN_DISTANCE
                     ) -> tuple[Tensor, int]:
    """The keyframe's points followed by those of its ``nsweeps - 1`` previous sweeps (as many as recorded).

    Every file is read by the checked reader :func:`~collab_distill.data.dataset.load_points`, against
    the point count of its record (a file changed after prepare is a ``DataFileError`` naming it).

    Args:
        root: the dataroot the info paths are relative to.
        info: the keyframe's record (``sweeps`` nearest first).
        nsweeps: clouds to aggregate, the keyframe included (``>= 1``).
        min_distance: sweep points inside this square around their LiDAR (x and y, metres) are dropped.

    Returns:
        ``points (N, 5)`` float32 x, y, z, intensity, ``Δt`` in the keyframe's LiDAR frame, the
        keyframe's ``info.num_points`` rows first (``Δt = 0``), and ``K = info.num_points``.
    """
    from collab_distill.data.dataset import load_points  # here: the dataset module imports this one

    keyframe = load_points(root / info.lidar_path, info.num_points).numpy()
    clouds = [np.concatenate([keyframe, np.zeros((len(keyframe), 1), np.float32)], axis=1)]
    for sweep in info.sweeps[:max(nsweeps - 1, 0)]:
        points = load_points(root / sweep.path, sweep.num_points).numpy()
        points = points[(np.abs(points[:, 0]) >= min_distance) | (np.abs(points[:, 1]) >= min_distance)]
        xyz = points[:, :3].astype(np.float64) @ sweep.sweep2lidar[:3, :3].T + sweep.sweep2lidar[:3, 3]
        lag = np.full((len(points), 1), (info.timestamp - sweep.timestamp) * 1e-6, np.float32)
        clouds.append(np.concatenate([xyz.astype(np.float32), points[:, 3:4], lag], axis=1))
    return torch.from_numpy(np.concatenate(clouds)), len(keyframe)


def sweep_labels(labels: Tensor, num_points: int) -> Tensor:
    """``(num_points,)``: the keyframe's ``labels (K,)`` followed by :data:`IGNORE` for every sweep row."""
    return torch.cat([labels, labels.new_full((num_points - len(labels),), IGNORE)])
