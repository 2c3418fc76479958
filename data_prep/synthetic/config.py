"""What a synthetic dataset contains: the config schema, a scene's condition, input validation.

This module is deliberately light (no numpy/open3d imports) so a command line can reject bad input
before the renderer loads. YAML files in ``configs/synthetic/`` validate against
:class:`SyntheticConfig` (``collab_distill.config.load_config(path, schema=SyntheticConfig)``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from collab_distill.config import ConfigError, check_config, register_schema
from collab_distill.data.conditions import CONDITION_TAGS, WEATHERS
from collab_distill.data.taxonomy import NUSCENES_VERSIONS
from collab_distill.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range

#: The releases whose scene names the world can use: those with train and val scenes (not the test set).
SYNTHETIC_VERSIONS: tuple[str, ...] = tuple(v for v in NUSCENES_VERSIONS if v != "v1.0-test")
MAX_IMAGE_SIZE = (1600, 900)


@dataclass(frozen=True)
class Condition:
    """One scene's condition: daylight or night, and at most one kind of weather.

    Written as ``clear``, ``night``, ``rain``, ``fog``, ``snow`` or ``night+rain`` (etc.); the scene
    description carries the same words (``"Synthetic street, night, rain, intersection"``).
    """

    night: bool = False
    weather: str = "clear"  # "clear" or one of WEATHERS

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """Parse ``"night+rain"``-style text; raise :class:`ConfigError` naming the bad word."""
        words = [w.strip().lower() for w in str(text).split("+")]
        unknown = [w for w in words if w not in CONDITION_TAGS]
        if unknown or not words:
            raise ConfigError(f"unknown condition '{text}' (use {', '.join(CONDITION_TAGS)}, "
                              f"or night+<weather>, e.g. night+rain)")
        weathers = [w for w in words if w in WEATHERS]
        if len(weathers) > 1 or len(set(words)) != len(words) or ("clear" in words and len(words) > 1):
            raise ConfigError(f"invalid condition '{text}': 'clear' stands alone and at most one of "
                              f"{', '.join(WEATHERS)} may follow 'night'")
        return cls(night="night" in words, weather=weathers[0] if weathers else "clear")

    @property
    def words(self) -> list[str]:
        """The condition as description words, e.g. ``["night", "rain"]`` or ``["clear"]``."""
        out = (["night"] if self.night else []) + ([self.weather] if self.weather != "clear" else [])
        return out or ["clear"]

    @property
    def adverse(self) -> bool:
        """True for anything but clear daylight."""
        return self.night or self.weather != "clear"

    def __str__(self) -> str:
        return "+".join(self.words)


@dataclass
class WeatherConfig:
    """Physical parameters of the conditions at ``severity = 1`` (see docs/data.md).

    Each scene draws its own severity as ``severity * U(0.75, 1.25)`` from the scene seed.
    """

    severity: PositiveFloat = 1.0
    night_photons: PositiveFloat = 150.0     # photo-electrons per unit linear radiance at night (day: x40)
    read_noise: NonNegativeFloat = 0.012     # Gaussian read noise, in units of full scale
    rain_rate_mm_h: NonNegativeFloat = 25.0  # rainfall rate
    fog_visibility_m: PositiveFloat = 60.0   # meteorological optical range; divided by the severity
    snow_rate_mm_h: NonNegativeFloat = 4.0   # liquid-water-equivalent snowfall rate


@dataclass
class SyntheticConfig:
    """Content of a synthetic nuScenes-format dataset. Same config -> byte-identical files."""

    version: str = "v1.0-mini"
    scenes: PositiveInt = 10
    samples_per_scene: Annotated[int, Range(ge=1, le=40)] = 10  # at most 20 s of driving
    # non-keyframe LiDAR sweeps before each keyframe but a scene's first, at the 20 Hz ticks just
    # before it (nuScenes has all 9 of a 0.5 s keyframe period); sweeps/LIDAR_TOP/, docs/data.md
    sweeps_per_keyframe: Annotated[int, Range(ge=0, le=9)] = 2
    image_size: tuple[int, int] = (448, 252)  # (width, height); checked by validate_config
    conditions: list[str] = field(default_factory=lambda: ["clear", "night", "rain", "fog", "snow",
                                                           "night+rain"])
    val_conditions: list[str] = field(default_factory=list)  # one val scene per entry; empty: in proportion
    paired_clear: bool = False
    dense_maps: bool = False
    seed: NonNegativeInt = 0
    jpeg_quality: Annotated[int, Range(ge=1, le=100)] = 90
    weather: WeatherConfig = field(default_factory=WeatherConfig)

    def parsed_conditions(self) -> list[Condition]:
        """The ``conditions`` list parsed (raises :class:`ConfigError` on an unknown word)."""
        return [Condition.parse(c) for c in self.conditions]


register_schema("synthetic", SyntheticConfig)


def validate_config(cfg: SyntheticConfig) -> None:
    """Reject impossible settings with one :class:`ConfigError` line (value ranges: the schema's)."""
    check_config(cfg, "synthetic config")
    if cfg.version not in SYNTHETIC_VERSIONS:
        raise ConfigError(f"unknown version '{cfg.version}' (use {' or '.join(SYNTHETIC_VERSIONS)})")
    width, height = cfg.image_size
    if width <= 0 or height <= 0:
        raise ConfigError(f"image size must be positive, got {width}x{height}")
    if width > MAX_IMAGE_SIZE[0] or height > MAX_IMAGE_SIZE[1]:
        raise ConfigError(f"image size {width}x{height} exceeds the nuScenes size "
                          f"{MAX_IMAGE_SIZE[0]}x{MAX_IMAGE_SIZE[1]}")
    if not cfg.conditions:
        raise ConfigError("conditions must name at least one condition")
    cfg.parsed_conditions()
    for text in cfg.val_conditions:
        Condition.parse(text)
    if cfg.val_conditions and len(cfg.val_conditions) >= cfg.scenes:
        raise ConfigError(f"val_conditions names {len(cfg.val_conditions)} val scenes; scenes ({cfg.scenes}) "
                          "must leave at least one for train")


#: File at the root of every generated dataset; its presence allows ``overwrite`` to clear a folder.
MARKER = "synthetic_config.yaml"


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early, in one line, if ``out`` cannot receive a new dataset.

    Raises:
        ConfigError: ``out`` is a file, sits under a file, is not writable, or already holds files
            (without ``overwrite``; with it, only a folder made by this generator may be replaced).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output '{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output folder '{out}' is not empty; pass --overwrite to replace it")
        if not (out / MARKER).is_file():
            raise ConfigError(f"refusing to overwrite '{out}': it holds files but no {MARKER}, so it was "
                              f"not made by this generator")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output '{out}' is not writable ('{parent}' is not a writable folder)")
