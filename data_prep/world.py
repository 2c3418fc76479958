"""The synthetic world for the demo and the ASVP study: :class:`SyntheticWorldBuilder`, the
:class:`~collab_distill.data.world.WorldBuilder` that ``tools/demo.py`` and ``tools/asvp_study.py``
hand to the library (which never imports ``data_prep`` itself).

It generates with :func:`data_prep.synthetic.generate.generate` and prepares with
:func:`data_prep.nuscenes_infos.prepare`; the heavy modules load only when a world is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from collab_distill.config import config_to_dict, load_config
from collab_distill.data.world import WorldFiles
from data_prep.synthetic.config import MARKER, SyntheticConfig

INFO_DIR = "infos"                 # <root>/infos: the info files of the world under <root>
PREPARED = "summary.json"          # written last by prepare
GENERATED = "scene.json"           # <root>/<version>/scene.json: a table written last by generate


def load_world(config: str) -> SyntheticConfig:
    """The synthetic config at ``config`` (a ``configs/synthetic/*.yaml`` path)."""
    return load_config(config, schema=SyntheticConfig)


class SyntheticWorldBuilder:
    """Makes the world of a ``configs/synthetic/*.yaml`` config and its info files under a root folder."""

    def settings(self, config: str) -> dict[str, Any]:
        """The resolved settings of ``config``, as the generator records them in ``<root>/synthetic_config.yaml``."""
        return config_to_dict(load_world(config))

    def recorded_settings(self, root: Path) -> dict[str, Any] | None:
        """The settings recorded by the generator in ``root``; None when it did not generate there."""
        marker = Path(root) / MARKER
        return yaml.safe_load(marker.read_text()) if marker.is_file() else None

    def files(self, config: str, root: Path) -> WorldFiles:
        """``<root>/<version>/scene.json``, ``<root>/infos`` and ``<root>/infos/summary.json``."""
        root = Path(root)
        return WorldFiles(generated=root / load_world(config).version / GENERATED, info_dir=root / INFO_DIR,
                          prepared=root / INFO_DIR / PREPARED)

    def generate(self, config: str, root: Path, workers: int, progress: bool) -> str:
        """Generate the world into ``root``; the first line of the generator's summary."""
        from data_prep.synthetic.generate import generate

        return generate(load_world(config), root, workers=workers, progress=progress).lines()[0]

    def prepare(self, config: str, root: Path, workers: int, progress: bool) -> str:
        """Write the info files into ``<root>/infos``; a line with the samples per split."""
        from data_prep.nuscenes_infos import prepare

        version = load_world(config).version
        summary = prepare(Path(root), version, Path(root) / INFO_DIR, workers=workers, progress=progress)
        counts = ", ".join(f"{split} {n}" for split, n in summary.totals.items())
        return f"prepared the info files of {version} in {Path(root) / INFO_DIR} (samples: {counts})"
