"""LiDAR degradations: fog, rain and snow scatter, beam dropout, at severities 1-5.

Every function takes one point cloud ``(N, C)`` float in the sensor frame (columns ``x, y, z`` in
metres, ``intensity``, optionally ``ring`` as in a ``.pcd.bin``; more columns are carried along; the
dataset's clouds hold the sweep time lag in column 4, not a ring: pass their ``points[:, :4]`` to
:func:`beam_dropout`, whose rings then come from the elevation), an integer ``severity``
in 1..5 and a ``torch.Generator`` on the points' device, and returns :class:`LidarDegraded`: the new
points ``(N', C)`` (survivors first, in their original order, then spurious points) and ``source``
``(N',)`` int64, the original row of each output point or ``-1`` for a spurious one. Validation and
seeding live in :mod:`collab_distill.data.degrade`; call
:func:`collab_distill.data.degrade.degrade_lidar`.

The fog model is a simplification of Hahner et al., "Fog Simulation on Real LiDAR Point Clouds for
3D Object Detection in Adverse Weather" (ICCV 2021); the rain/snow scatter and the beam dropout are
in the spirit of Robo3D's corruptions (Kong et al., ICCV 2023). lidar-aug, which simulates weather
by ray tracing particles, cannot be installed against this torch (docs/degradations.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

Table = dict[str, tuple[float, ...]]

#: Returns closer than this (metres) are never produced (the sensor's blind zone).
MIN_RANGE_M = 1.0


class LidarDegraded(NamedTuple):
    """Degraded cloud: ``points`` ``(N', C)`` and ``source`` ``(N',)`` int64 (original row or -1)."""

    points: Tensor
    source: Tensor


@dataclass(frozen=True)
class LidarDegradation:
    """A registered LiDAR degradation: ``apply(points (N,C), severity, generator) -> LidarDegraded``,
    its parameter table (name -> five values, one per severity) and a one-line model summary."""

    apply: Callable[[Tensor, int, torch.Generator], LidarDegraded]
    table: Table
    model: str


def _param(table: Table, name: str, severity: int) -> float:
    return table[name][severity - 1]


def _uniform(generator: torch.Generator, n: int, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=like.device, dtype=torch.float32)


def _assemble(points: Tensor, keep: Tensor, spurious: Tensor) -> LidarDegraded:
    """Survivors ``points[keep]`` followed by ``spurious`` ``(S, C)`` rows (source -1)."""
    survivors = torch.nonzero(keep).squeeze(1)
    source = torch.cat([survivors, survivors.new_full((len(spurious),), -1)])
    return LidarDegraded(torch.cat([points[keep], spurious]), source)


def _along_ray(points: Tensor, rows: Tensor, new_range: Tensor, intensity: Tensor) -> Tensor:
    """Copies of ``points[rows]`` moved along their ray to ``new_range`` ``(S,)`` metres, with new
    ``intensity`` ``(S,)``; the other columns (ring, ...) are kept."""
    moved = points[rows].clone()
    direction = moved[:, :3] / moved[:, :3].norm(dim=1, keepdim=True).clamp_min(1e-6)
    moved[:, :3] = direction * new_range[:, None]
    moved[:, 3] = intensity
    return moved


def _low_intensity(points: Tensor, u: Tensor, share: float) -> Tensor:
    """Intensity of a particle return: ``u * share`` of the cloud's largest intensity."""
    top = points[:, 3].max() if len(points) else points.new_zeros(())
    return u * share * top


# ------------------------------------------------------------------------------------------ fog
FOG: Table = {
    "visibility_m": (500.0, 250.0, 120.0, 60.0, 30.0),   # MOR V; alpha = ln(20) / V
    "backscatter": (0.05, 0.1, 0.15, 0.2, 0.25),         # share of lost rays that return from the fog
}
#: A clear-weather return exceeds the detection threshold by a factor exp(m), m ~ U(0, this).
LOG_MARGIN = math.log(1000.0)
#: Mean distance (metres) beyond :data:`MIN_RANGE_M` of a backscatter return.
BACKSCATTER_MEAN_M = 2.0
#: Largest intensity of a backscatter return, as a share of the scan's maximum.
BACKSCATTER_INTENSITY = 0.05


def fog(points: Tensor, severity: int, generator: torch.Generator) -> LidarDegraded:
    """Range-dependent loss, intensity attenuation and short-range backscatter.

    The round trip through fog scales a return's power by ``exp(-2 alpha r)`` (Beer-Lambert). A point
    whose clear-weather return cleared the detection threshold by a random log-margin
    ``m ~ U(0, LOG_MARGIN)`` is lost when ``2 alpha r > m``, so ``p_drop = min(1, 2 alpha r / LOG_MARGIN)``
    grows linearly with range. Survivors keep their xyz; their intensity is multiplied by
    ``exp(-2 alpha r)``. A share ``backscatter`` of the lost rays return from the fog itself, at
    ``MIN_RANGE_M + Exp(BACKSCATTER_MEAN_M)`` metres (never beyond the lost point) with low intensity.
    """
    alpha = math.log(20.0) / _param(FOG, "visibility_m", severity)
    distance = points[:, :3].norm(dim=1)
    loss = 2 * alpha * distance
    keep = loss < LOG_MARGIN * _uniform(generator, len(points), points)
    attenuated = points.clone()
    attenuated[:, 3] = points[:, 3] * torch.exp(-loss)
    rows = torch.nonzero(~keep & (_uniform(generator, len(points), points)
                                  < _param(FOG, "backscatter", severity))).squeeze(1)
    exponential = -torch.log1p(-_uniform(generator, len(rows), points))       # Exp(1)
    new_range = torch.minimum(MIN_RANGE_M + BACKSCATTER_MEAN_M * exponential, distance[rows])
    faint = _low_intensity(points, _uniform(generator, len(rows), points), BACKSCATTER_INTENSITY)
    return _assemble(attenuated, keep, _along_ray(points, rows, new_range, faint))


# ------------------------------------------------------------------------------- rain and snow
RAIN: Table = {
    "scatter": (0.005, 0.01, 0.02, 0.035, 0.05),    # share of rays whose first return is a drop
    "drop": (0.02, 0.05, 0.08, 0.12, 0.16),         # share of returns lost (absorption, wet surfaces)
    "range_noise_m": (0.01, 0.02, 0.03, 0.05, 0.08),
    "max_range_m": (8.0, 8.0, 8.0, 8.0, 8.0),       # drops are seen only this close
    "intensity": (0.05, 0.05, 0.05, 0.05, 0.05),    # particle intensity, share of the cloud maximum
}
SNOW: Table = {
    "scatter": (0.01, 0.025, 0.045, 0.07, 0.1),
    "drop": (0.01, 0.03, 0.05, 0.08, 0.1),
    "range_noise_m": (0.01, 0.02, 0.03, 0.04, 0.05),
    "max_range_m": (12.0, 12.0, 12.0, 12.0, 12.0),
    "intensity": (0.3, 0.3, 0.3, 0.3, 0.3),
}


def _scatter(points: Tensor, severity: int, generator: torch.Generator, table: Table) -> LidarDegraded:
    """Precipitation: a share ``scatter`` of the rays hit a particle first and return from it, at a
    uniform range in ``[MIN_RANGE_M, min(r, max_range_m)]``; a further share ``drop`` of the returns
    are lost; survivors get Gaussian range noise ``range_noise_m`` along their ray."""
    p = {k: _param(table, k, severity) for k in table}
    n = len(points)
    distance = points[:, :3].norm(dim=1)
    hit = _uniform(generator, n, points) < p["scatter"]
    keep = ~hit & (_uniform(generator, n, points) >= p["drop"])
    noisy_range = distance + p["range_noise_m"] * torch.randn(n, generator=generator, device=points.device)
    noisy = _along_ray(points, torch.arange(n, device=points.device), noisy_range.clamp_min(0), points[:, 3])
    rows = torch.nonzero(hit).squeeze(1)
    far = torch.clamp(distance[rows], max=p["max_range_m"]).clamp_min(MIN_RANGE_M)
    new_range = MIN_RANGE_M + (far - MIN_RANGE_M) * _uniform(generator, len(rows), points)
    particle = _low_intensity(points, _uniform(generator, len(rows), points), p["intensity"])
    return _assemble(noisy, keep, _along_ray(points, rows, new_range, particle))


def rain(points: Tensor, severity: int, generator: torch.Generator) -> LidarDegraded:
    """Rain scatter (table :data:`RAIN`): few, faint drop returns near the sensor, more lost returns."""
    return _scatter(points, severity, generator, RAIN)


def snow(points: Tensor, severity: int, generator: torch.Generator) -> LidarDegraded:
    """Snow scatter (table :data:`SNOW`): many, brighter flake returns up to 12 m."""
    return _scatter(points, severity, generator, SNOW)


# ------------------------------------------------------------------------------- beam dropout
BEAM_DROPOUT: Table = {"dropped_share": (0.1, 0.25, 0.4, 0.55, 0.7)}
#: Elevation bins standing in for rings when the cloud has no ring column (nuScenes: 32 beams).
ELEVATION_BINS = 32


def rings_of(points: Tensor) -> Tensor:
    """``(N,)`` int64 ring of every point: column 4 when present, else one of
    :data:`ELEVATION_BINS` equal bins between the lowest and highest elevation angle."""
    if points.shape[1] > 4:
        return points[:, 4].round().long()
    elevation = torch.atan2(points[:, 2], points[:, :2].norm(dim=1))
    if len(points) == 0:
        return elevation.long()
    low, high = elevation.min(), elevation.max()
    scaled = (elevation - low) / (high - low).clamp_min(1e-9) * ELEVATION_BINS
    return scaled.long().clamp_max(ELEVATION_BINS - 1)


def beam_dropout(points: Tensor, severity: int, generator: torch.Generator) -> LidarDegraded:
    """Whole rings vanish: ``round(dropped_share * rings)`` (at least one) of the rings present,
    chosen at random, lose all their points. Survivors are unchanged."""
    rings = rings_of(points)
    present = torch.unique(rings)
    count = max(1, round(_param(BEAM_DROPOUT, "dropped_share", severity) * len(present)))
    order = torch.randperm(len(present), generator=generator, device=points.device)
    keep = ~torch.isin(rings, present[order[:count]])
    return _assemble(points, keep, points[:0])


#: Name -> LiDAR degradation.
LIDAR_DEGRADATIONS: dict[str, LidarDegradation] = {
    "fog": LidarDegradation(fog, FOG, "Beer-Lambert loss vs. detection margin, intensity attenuation, "
                                      "short-range backscatter"),
    "rain": LidarDegradation(rain, RAIN, "near-range drop returns, lost returns, range noise"),
    "snow": LidarDegradation(snow, SNOW, "near-range flake returns, lost returns, range noise"),
    "beam_dropout": LidarDegradation(beam_dropout, BEAM_DROPOUT, "whole rings removed"),
}
