"""The condition vocabulary: the tags a sample carries and the scene-description words that carry them.

A scene is ``clear``, or ``night`` and/or one weather of :data:`WEATHERS`. The tags are the columns of
the ``conditions`` multi-hot of a batch (:data:`CONDITION_TAGS` order), the groups of the probe
results, and the words the synthetic world writes into a scene description;
:func:`parse_conditions` reads them back from a real or synthetic nuScenes scene description.
"""
from __future__ import annotations

import re

#: The weathers; a scene has at most one.
WEATHERS: tuple[str, ...] = ("rain", "fog", "snow")
#: Condition tags, in the column order of the ``conditions`` multi-hot in a batch.
CONDITION_TAGS: tuple[str, ...] = ("clear", "night", *WEATHERS)
#: Adverse tag -> the words of a (free-text) nuScenes scene description that carry it.
DESCRIPTION_WORDS: dict[str, frozenset[str]] = {
    "night": frozenset({"night", "nighttime"}),
    "rain": frozenset({"rain", "rainy", "raining"}),
    "fog": frozenset({"fog", "foggy", "haze"}),
    "snow": frozenset({"snow", "snowy", "snowing"}),
}


def parse_conditions(description: str) -> list[str]:
    """Condition tags of a scene description: the adverse tags whose words it contains (whole words,
    in :data:`CONDITION_TAGS` order), else ``["clear"]``.

    >>> parse_conditions("Night, rain, parked cars")
    ['night', 'rain']
    """
    words = set(re.findall(r"[a-z]+", description.lower()))
    tags = [tag for tag, variants in DESCRIPTION_WORDS.items() if words & variants]
    return tags or ["clear"]
