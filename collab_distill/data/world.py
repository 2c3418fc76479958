"""The synthetic world a job runs on, as the library sees it: a protocol its caller fills in.

Layers import downwards, and ``data_prep`` sits above the library (it may import ``collab_distill``,
never the reverse). The demo (:mod:`collab_distill.pipeline`) and the ASVP study
(:mod:`collab_distill.defense.study`) still need a synthetic nuScenes-format world and its info
files, so they take a :class:`WorldBuilder` from their caller: ``tools/demo.py`` and
``tools/asvp_study.py`` pass ``data_prep.world.SyntheticWorldBuilder()``.

A world is named by its synthetic config (a ``configs/synthetic/*.yaml`` path, found as every config
is) and lives in a root folder: the generated set under ``<root>``, its info files in ``<root>/infos``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class WorldFiles:
    """Where a world's two parts are; each part is complete once its marker file exists."""

    generated: Path   # marker of the generated set (written last)
    info_dir: Path    # the info files every data config points to (``data.info_dir``)
    prepared: Path    # marker of the info files (written last)


class WorldBuilder(Protocol):
    """Generates the world of a synthetic config into a folder and prepares its info files."""

    def settings(self, config: str) -> dict[str, Any]:
        """The resolved settings of the synthetic config ``config`` as a plain (YAML/JSON-safe) dict:
        what a generated world records. Raises :class:`~collab_distill.config.ConfigError` for a bad
        config, before anything is written."""
        ...

    def recorded_settings(self, root: Path) -> dict[str, Any] | None:
        """The settings the world generated under ``root`` was made with; None when none was."""
        ...

    def files(self, config: str, root: Path) -> WorldFiles:
        """The folders and completion markers of the world of ``config`` under ``root`` (writes nothing)."""
        ...

    def generate(self, config: str, root: Path, workers: int, progress: bool) -> str:
        """Generate the world of ``config`` into ``root`` (absent or empty); returns a one-line summary."""
        ...

    def prepare(self, config: str, root: Path, workers: int, progress: bool) -> str:
        """Write the info files of the world under ``root`` into ``files(config, root).info_dir``
        (resuming what exists); returns a one-line summary."""
        ...
