"""The 16-class lidarseg mapping equals the devkit's LidarsegClassMapper (the oracle)."""
from __future__ import annotations

import numpy as np

from collab_distill.data.taxonomy import CATEGORY_NAMES, COARSE_CLASSES, fine_to_coarse_lut


def test_mapping_matches_devkit(synthetic_root):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.nuscenes import NuScenes

    mapper = LidarsegClassMapper(NuScenes("v1.0-mini", str(synthetic_root), verbose=False))
    devkit = mapper.get_fine_idx_2_coarse_idx()
    lut = fine_to_coarse_lut()
    assert len(lut) == len(CATEGORY_NAMES) == 32
    assert {i: int(lut[i]) for i in range(32)} == devkit
    assert mapper.get_coarse2idx() == {name: i for i, name in enumerate(COARSE_CLASSES)}
    assert set(np.unique(lut)) == set(range(17))  # every coarse class is reachable
