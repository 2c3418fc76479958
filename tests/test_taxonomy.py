"""The vocabulary: the 16-class lidarseg mapping equals the devkit's LidarsegClassMapper (the oracle), the
condition words read back as the tags written, and every vocabulary name is defined in one module."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from collab_distill.data.conditions import CONDITION_TAGS, DESCRIPTION_WORDS, WEATHERS, parse_conditions
from collab_distill.data.taxonomy import (
    CATEGORY_NAMES,
    COARSE_CLASSES,
    FINE_TO_COARSE,
    IGNORE,
    LIDARSEG_CLASSES,
    fine_to_coarse_lut,
    fine_to_eval_lut,
)


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


def test_description_words_cover_the_adverse_tags_in_column_order():
    assert tuple(DESCRIPTION_WORDS) == CONDITION_TAGS[1:]  # parse_conditions returns tags in column order
    assert CONDITION_TAGS[0] == "clear" and set(WEATHERS) < set(CONDITION_TAGS)
    assert all(tag in words for tag, words in DESCRIPTION_WORDS.items())


@pytest.mark.parametrize("text", ["clear", "night", "rain", "fog", "snow", "night+rain", "night+fog", "night+snow"])
def test_synthetic_description_reads_back_as_its_condition(text):
    """The words the synthetic world writes into a scene description are the tags the preparation reads."""
    from data_prep.synthetic.config import Condition

    words = Condition.parse(text).words
    assert parse_conditions(f"Synthetic street, {', '.join(words)}, intersection") == words


def _module_assignments(root: Path) -> dict[str, list[str]]:
    """Name -> modules (paths relative to ``root``) that assign it at module level."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/**/*.py")):
        top = path.relative_to(root).parts[0]
        if top not in ("collab_distill", "data_prep", "tools"):
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        found.setdefault(name.id, []).append(str(path.relative_to(root)))
    return found


def test_vocabulary_is_defined_once():
    assigned = _module_assignments(Path(__file__).resolve().parents[1])
    once = ["IGNORE", "COARSE_IGNORE", "CATEGORIES", "COARSE_CLASSES", "LIDARSEG_CLASSES", "FINE_TO_COARSE",
            "NUSCENES_VERSIONS", "CONDITION_TAGS", "WEATHERS", "DESCRIPTION_WORDS", "POINT_COLUMNS", "PLACEMENTS"]
    assert {name: assigned.get(name, []) for name in once if len(assigned.get(name, [])) != 1} == {}
    assert assigned["CONDITION_TAGS"] == ["collab_distill/data/conditions.py"]
    assert assigned["IGNORE"] == ["collab_distill/data/taxonomy.py"]
    retired = ["VERSIONS", "ADVERSE_TAGS", "CONDITION_WORDS", "CLASSES"]  # the old twins' names
    assert {name: assigned[name] for name in retired if name in assigned} == {}
