"""The nuScenes vocabularies the synthetic world writes: lidarseg categories (from
:mod:`collab_distill.data.taxonomy`), attributes, visibility."""
from __future__ import annotations

import numpy as np

from collab_distill.data.taxonomy import (  # noqa: F401  (re-exported: the world writes this vocabulary)
    CATEGORIES,
    CATEGORY_NAMES,
    COARSE_CLASSES,
    FINE_TO_COARSE,
    NAME_TO_INDEX,
    NOISE,
    fine_to_coarse_lut,
)

#: (name, description) of the nuScenes annotation attributes.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent "
                        "to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

#: (token, level, description) of the nuScenes visibility bins (fraction visible in the 6 images).
VISIBILITY_LEVELS: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def visibility_token(fraction: float) -> str:
    """Token of the visibility bin that holds ``fraction`` (0..1) of an object visible."""
    edges = (0.4, 0.6, 0.8)
    return VISIBILITY_LEVELS[int(np.searchsorted(edges, fraction, side="right"))][0]
