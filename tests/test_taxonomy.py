"""The 16-class lidarseg mapping equals the devkit's LidarsegClassMapper (the oracle)."""
from __future__ import annotations

import numpy as np

from collab_distill.data.taxonomy import (CATEGORY_NAMES, COARSE_CLASSES, FINE_TO_COARSE, IGNORE, LIDARSEG_CLASSES,
                                          fine_to_coarse_lut, fine_to_eval_lut)


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


def test_fine_to_eval_lut_names_the_same_class_as_the_table():
    lut = fine_to_eval_lut()
    assert lut.shape == (len(CATEGORY_NAMES),)
    for fine, label in zip(CATEGORY_NAMES, lut.tolist()):
        coarse = FINE_TO_COARSE[fine]
        assert label == (IGNORE if coarse == "ignore" else LIDARSEG_CLASSES.index(coarse)), fine
