"""Things that move: the ego's drive and the movable objects (agents), as functions of time."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from data_prep.synthetic.meshes import pose2d
from data_prep.synthetic.props import Prop


@dataclass
class EgoPath:
    """The ego's drive: straight for ``straight`` metres, then an optional arc, then straight.

    ``turn`` is the signed arc angle (rad, + = left) and ``radius`` its radius; time 0 is the first
    keyframe; the path extends backwards in time along the initial heading.
    """

    x0: float
    y0: float
    yaw0: float
    speed: float
    straight: float
    turn: float = 0.0
    radius: float = 10.0

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, yaw)`` of the ego (rear-axle centre) at times ``t`` (s), each shaped like ``t``."""
        s = self.speed * np.asarray(t, np.float64)
        sign = np.sign(self.turn)
        arc_len = abs(self.turn) * self.radius
        d0 = np.array([np.cos(self.yaw0), np.sin(self.yaw0)])
        p1 = np.array([self.x0, self.y0]) + self.straight * d0
        left0 = np.array([-d0[1], d0[0]])
        center = p1 + sign * self.radius * left0
        phi = np.clip(s - self.straight, 0, arc_len) / self.radius
        yaw = self.yaw0 + sign * phi
        on_arc = center[:, None] + sign * self.radius * np.stack([np.sin(yaw), -np.cos(yaw)])
        yaw_end = self.yaw0 + self.turn
        p2 = center + sign * self.radius * np.array([np.sin(yaw_end), -np.cos(yaw_end)])
        after = np.maximum(s - self.straight - arc_len, 0)
        before = np.array([self.x0, self.y0])[:, None] + d0[:, None] * s[None]
        end = p2[:, None] + np.array([np.cos(yaw_end), np.sin(yaw_end)])[:, None] * after[None]
        stage = np.where(s < self.straight, 0, np.where(s < self.straight + arc_len, 1, 2))
        xy = np.where(stage == 0, before, np.where(stage == 1, on_arc, end))
        yaw = np.where(stage == 0, self.yaw0, np.where(stage == 1, yaw, yaw_end))
        return xy[0], xy[1], yaw

    def matrix(self, t: float) -> np.ndarray:
        """``(4, 4)`` ego -> scene transform at time ``t`` (s)."""
        x, y, yaw = self.state(np.array([t]))
        return pose2d(float(x[0]), float(y[0]), 0.0, float(yaw[0]))

    def mirrored(self) -> "EgoPath":
        return replace(self, y0=-self.y0, yaw0=-self.yaw0, turn=-self.turn)


@dataclass
class Agent:
    """A movable object (it gets a box): a mesh in its box frame moving at constant velocity.

    ``x, y`` is the box centre on the ground at time 0, ``base_z`` the ground height under it
    (0 on the road, the kerb height on a sidewalk), ``yaw`` the heading, ``speed`` in m/s.
    """

    category: str
    prop: Prop
    x: float
    y: float
    base_z: float
    yaw: float
    speed: float
    attribute: str

    def center(self, t: np.ndarray) -> np.ndarray:
        """``(T, 3)`` box centres at times ``t`` ``(T,)``."""
        t = np.asarray(t, np.float64).reshape(-1)
        return np.stack([self.x + self.speed * t * np.cos(self.yaw), self.y + self.speed * t * np.sin(self.yaw),
                         np.full_like(t, self.base_z + self.prop.size[2] / 2)], 1)

    def box_pose(self, t: float) -> np.ndarray:
        """``(4, 4)`` box -> scene transform at time ``t``."""
        c = self.center(np.array([t]))[0]
        return pose2d(c[0], c[1], c[2], self.yaw)

    def mirrored(self) -> "Agent":
        return replace(self, prop=Prop(self.prop.mesh.mirrored(), self.prop.size), y=-self.y, yaw=-self.yaw)
