"""A scene: a seeded layout under a condition, the ego's drive, lights, the sun and the global frame.

:func:`build_scene` builds one of the :data:`~data_prep.synthetic.layouts.LAYOUTS` in a local
"scene" frame, mirrors it for left-hand-traffic locations (Singapore), drops agents that would
collide, and places the scene frame in the nuScenes global frame (:attr:`Scene.scene2global`).
At a time ``t``, :meth:`Scene.mesh_at` returns the static world plus every agent at its pose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.synthetic.config import Condition
from data_prep.synthetic.layouts import LAYOUTS, WorldBuilder, intersection, parking, straight
from data_prep.synthetic.meshes import TriMesh, pose2d
from data_prep.synthetic.motion import Agent, EgoPath

LEFT_HAND_LOCATIONS = ("singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")


@dataclass
class Scene:
    """Everything needed to render one scene.

    Attributes:
        description: the nuScenes scene description, e.g. ``Synthetic street, night, rain, intersection``.
        static: the non-moving world (instance -1).
        agents: movable objects; agent ``i`` has instance id ``i`` in :meth:`mesh_at`.
        lamps: ``(L, 3)`` street-lamp positions (scene frame).
        sun: ``(3,)`` unit vector towards the sun (scene frame).
        scene2global: ``(4, 4)`` scene -> nuScenes global frame.
        footprints: ``(K, 2)`` polygons (scene frame) of road and sidewalk, for the map image.
    """

    description: str
    static: TriMesh
    agents: list[Agent]
    ego: EgoPath
    lamps: np.ndarray
    sun: np.ndarray
    scene2global: np.ndarray
    footprints: list[np.ndarray] = field(default_factory=list)

    def mesh_at(self, t: float) -> TriMesh:
        """The world at time ``t`` (s): static mesh followed by every agent at its pose."""
        moved = [a.prop.mesh.with_instance(i).transformed(a.box_pose(t)) for i, a in enumerate(self.agents)]
        return TriMesh.concat([self.static] + moved)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def build_scene(condition: Condition, layout: str, location: str, num_samples: int, rng: np.random.Generator
                ) -> Scene:
    """Build one seeded scene.

    Args:
        condition: clear/night/weather, written into the description.
        layout: one of :data:`LAYOUTS`.
        location: nuScenes log location; Singapore locations drive on the left.
        num_samples: keyframes at 2 Hz; the drive lasts ``(num_samples - 1) / 2`` s.
        rng: the scene's random generator (everything random flows from it).
    """
    left_hand = location in LEFT_HAND_LOCATIONS
    w = WorldBuilder(rng, yellow_centre=not left_hand)
    w.ground()
    duration = 0.5 * (num_samples - 1)
    if layout == "straight":
        ego, details = straight(w, duration), "straight road"
    elif layout == "intersection":
        ego, turned = intersection(w, duration)
        details = "intersection" + (", turn " + ("right" if left_hand else "left") if turned else "")
    elif layout == "parking":
        ego, details = parking(w, duration), "parked cars"
    else:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    times = np.linspace(-0.1, duration + 0.05, max(2, 4 * num_samples))
    agents = w.cleared(ego, times)
    static = w.b.build()
    lamps = np.array(w.lamps).reshape(-1, 3)
    footprints = w.footprints
    if left_hand:
        static = static.mirrored()
        agents = [a.mirrored() for a in agents]
        ego = ego.mirrored()
        lamps = lamps * [1, -1, 1]
        footprints = [f * [1, -1] for f in footprints]
    elevation, azimuth = np.deg2rad(rng.uniform(20, 60)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    place = "parking lot" if layout == "parking" else "street"
    description = f"Synthetic {place}, {', '.join(condition.words)}, {details}"
    return Scene(description=description, static=static, agents=agents, ego=ego, lamps=lamps, sun=sun,
                 scene2global=_scene_to_global(ego, duration, rng), footprints=footprints)


def _scene_to_global(ego: EgoPath, duration: float, rng: np.random.Generator) -> np.ndarray:
    """A random rotation about z and a translation that keeps the drive at least 70 m from the
    global axes (the devkit crops the map image around the ego and needs positive pixel indices)."""
    x, y, _ = ego.state(np.linspace(0, duration, 16))
    half = max(np.ptp(x), np.ptp(y)) / 2 + 1
    yaw = rng.uniform(0, 2 * np.pi)
    rot = pose2d(0, 0, 0, yaw)
    mid = rot[:2, :2] @ [x.mean(), y.mean()]
    offset = half + 75 + rng.uniform(0, 20)
    rot[:2, 3] = [offset - mid[0], offset - mid[1]]
    return rot
