"""Street layouts: roads, sidewalks, buildings, street furniture and traffic, in a local frame.

Three layouts (a straight road, a four-way intersection, an open parking lot) are built with
right-hand traffic; :func:`data_prep.synthetic.scene.build_scene` mirrors them for left-hand traffic.
Each layout function fills a :class:`WorldBuilder` and returns the ego's :class:`EgoPath`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.synthetic import props
from data_prep.synthetic.materials import Mat
from data_prep.synthetic.meshes import MeshBuilder, box, pose2d, quad
from data_prep.synthetic.motion import Agent, EgoPath
from data_prep.synthetic.taxonomy import NAME_TO_INDEX as CAT

LAYOUTS = ("straight", "intersection", "parking")
LANE = 3.5          # lane width, m
PARKING_LANE = 2.5  # kerbside parking lane width, m
CURB = 0.15         # sidewalk height above the road, m
EXTENT = 250.0      # half size of the modelled world, m
EGO_SIZE = (1.9, 4.6)  # ego footprint (width, length), rear axle 1.3 m behind the centre


# --------------------------------------------------------------------------------------------
# Roads
# --------------------------------------------------------------------------------------------
@dataclass
class Road:
    """An axis-aligned road: ``axis`` 0 runs along x, 1 along y; ``center`` is its cross coordinate.

    Positions on it are ``(s, d)``: ``s`` along the road, ``d`` to the left of its +s direction.
    """

    axis: int
    center: float
    lanes: int
    parking: bool

    @property
    def half_width(self) -> float:
        return self.lanes * LANE + (PARKING_LANE if self.parking else 0.0)

    @property
    def heading(self) -> float:
        return 0.0 if self.axis == 0 else np.pi / 2

    def xy(self, s: float, d: float) -> tuple[float, float]:
        return (s, self.center + d) if self.axis == 0 else (self.center - d, s)

    def rect(self, s0: float, s1: float, d0: float, d1: float) -> np.ndarray:
        """``(4, 2)`` corners of the road-aligned rectangle ``[s0, s1] x [d0, d1]``."""
        return np.array([self.xy(s0, d0), self.xy(s1, d0), self.xy(s1, d1), self.xy(s0, d1)])

    def lane_d(self, lane: int, forward: bool) -> float:
        """Lateral offset of lane ``lane`` (0 = next to the centre line), right-hand traffic."""
        return -(lane + 0.5) * LANE if forward else (lane + 0.5) * LANE


def _intervals(s0: float, s1: float, holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``[s0, s1]`` minus the ``holes``, as sorted disjoint intervals."""
    out = [(s0, s1)]
    for h0, h1 in holes:
        out = [piece for a, b in out for piece in ((a, min(b, h0)), (max(a, h1), b)) if piece[1] - piece[0] > 0.1]
    return out


def _add_rect(b: MeshBuilder, road: Road, s0: float, s1: float, d0: float, d1: float, z: float, height: float,
              category: str, material: Mat, color) -> None:
    """A road-aligned quad at height ``z`` (``height == 0``) or a box standing on ``z``."""
    (x0, y0), (x1, y1) = road.xy(s0, d0), road.xy(s1, d1)
    cx, cy, lx, ly = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0), abs(y1 - y0)
    prim = quad(lx, ly) if height == 0 else box(lx, ly, height)
    b.add(prim, pose2d(cx, cy, z), CAT[category], material, color)


class WorldBuilder:
    """Accumulates a layout: static mesh, agents, lamps, obstacles and map footprints."""

    def __init__(self, rng: np.random.Generator, yellow_centre: bool) -> None:
        self.rng = rng
        self.b = MeshBuilder()
        self.agents: list[Agent] = []
        self.lamps: list[np.ndarray] = []
        self.obstacles: list[tuple[float, float, float]] = []  # (x, y, radius) of poles and trunks
        self.footprints: list[np.ndarray] = []
        self.yellow_centre = yellow_centre

    # ---------------------------------------------------------------- static structure
    def ground(self) -> None:
        self.b.add(quad(4 * EXTENT, 4 * EXTENT), pose2d(0, 0, -0.02), CAT["flat.terrain"], Mat.GRASS,
                   np.array([0.16, 0.26, 0.08]) * self.rng.uniform(0.8, 1.2))

    def road(self, road: Road, s0: float, s1: float, crossings: list[tuple[float, float]]) -> None:
        """Asphalt, lane markings (interrupted at ``crossings``) and zebra crossings before them."""
        hw = road.half_width
        _add_rect(self.b, road, s0, s1, -hw, hw, 0.0, 0, "flat.driveable_surface", Mat.ASPHALT,
                  np.array([0.11, 0.11, 0.115]) * self.rng.uniform(0.8, 1.2))
        self.footprints.append(road.rect(s0, s1, -hw, hw))
        white, yellow = (0.75, 0.75, 0.72), (0.7, 0.5, 0.05)
        holes = [(a - 4.5, b + 4.5) for a, b in crossings]
        for a, b in _intervals(s0, s1, holes):
            centre = yellow if self.yellow_centre else white
            for d in (-0.12, 0.12) if self.yellow_centre else (0.0,):
                self._line(road, a, b, d, centre, dashed=not self.yellow_centre)
            for k in range(1, road.lanes):
                for d in (k * LANE, -k * LANE):
                    self._line(road, a, b, d, white, dashed=True)
            for d in (road.lanes * LANE, -road.lanes * LANE):
                self._line(road, a, b, d, white, dashed=False)
        for a, b in crossings:
            for s_start, s_end in ((a - 4.0, a - 1.0), (b + 1.0, b + 4.0)):
                for d in np.arange(-hw + 0.6, hw - 0.3, 1.2):
                    _add_rect(self.b, road, s_start, s_end, d, d + 0.55, 0.01, 0, "flat.driveable_surface",
                              Mat.PAINT, white)

    def _line(self, road: Road, s0: float, s1: float, d: float, color, dashed: bool) -> None:
        if not dashed:
            _add_rect(self.b, road, s0, s1, d - 0.07, d + 0.07, 0.01, 0, "flat.driveable_surface", Mat.PAINT, color)
            return
        for s in np.arange(s0, s1 - 3.0, 9.0):
            _add_rect(self.b, road, s, s + 3.0, d - 0.07, d + 0.07, 0.01, 0, "flat.driveable_surface", Mat.PAINT,
                      color)

    def sidewalks(self, road: Road, width: float, s0: float, s1: float, holes: list[tuple[float, float]]) -> None:
        hw = road.half_width
        color = np.array([0.42, 0.41, 0.39]) * self.rng.uniform(0.85, 1.15)
        for a, b in _intervals(s0, s1, holes):
            for d0 in (hw, -hw - width):
                _add_rect(self.b, road, a, b, d0, d0 + width, 0.0, CURB, "flat.sidewalk", Mat.CONCRETE, color)
                self.footprints.append(road.rect(a, b, d0, d0 + width))

    def frontage(self, road: Road, offset: float, s0: float, s1: float, holes: list[tuple[float, float]]) -> None:
        """Buildings (or trees and bushes on the terrain) along both sides, ``offset`` from the centre."""
        rng = self.rng
        for side in (1, -1):
            for a, b in _intervals(s0, s1, holes):
                s = a + rng.uniform(0, 4)
                while s < b - 6:
                    width = min(rng.uniform(8, 30), b - s)
                    if rng.random() < 0.8:
                        depth, setback = rng.uniform(10, 22), rng.uniform(0.5, 4)
                        x, y = road.xy(s + width / 2, side * (offset + setback + depth / 2))
                        w, d = (width, depth) if road.axis == 0 else (depth, width)
                        props.building(self.b, rng, x, y, w, d, 0.0)
                    else:
                        for k in range(int(width // 5)):
                            x, y = road.xy(s + 2.5 + 5 * k, side * (offset + rng.uniform(2, 8)))
                            (props.tree if rng.random() < 0.6 else props.bush)(self.b, rng, x, y)
                    s += width + rng.uniform(0, 6)

    def furniture(self, road: Road, width: float, s0: float, s1: float, holes: list[tuple[float, float]]) -> None:
        """Lamps, trees, signs and benches along the kerb and the back of both sidewalks."""
        rng = self.rng
        hw = road.half_width
        lamp_gap = rng.uniform(22, 35)
        for side in (1, -1):
            for a, b in _intervals(s0, s1, holes):
                for s in np.arange(a + rng.uniform(2, 8), b - 1, lamp_gap):
                    x, y = road.xy(s, side * (hw + 0.5))
                    facing = road.heading - side * np.pi / 2
                    self.lamps.append(props.street_lamp(self.b, x, y, facing))
                    self.obstacles.append((x, y, 0.3))
                for s in np.arange(a + lamp_gap / 2, b - 1, lamp_gap):
                    x, y = road.xy(s + rng.uniform(-3, 3), side * (hw + 0.6))
                    kind = rng.random()
                    if kind < 0.55:
                        props.tree(self.b, rng, x, y)
                    elif kind < 0.8:
                        props.sign(self.b, rng, x, y, road.heading + (np.pi if side > 0 else 0.0))
                    else:
                        x, y = road.xy(s, side * (hw + width - 0.5))
                        props.bench(self.b, x, y, road.heading)
                    self.obstacles.append((x, y, 0.5))

    # ---------------------------------------------------------------- agents
    def agent(self, prop: props.Prop, category: str, x: float, y: float, yaw: float, speed: float = 0.0,
              attribute: str = "", base_z: float = 0.0) -> None:
        self.agents.append(Agent(category, prop, float(x), float(y), base_z, float(yaw), float(speed), attribute))

    def pedestrian(self, x: float, y: float, yaw: float, walking: bool) -> None:
        """An adult (or, one time in ten, a child) on a sidewalk, walking or standing."""
        prop = props.pedestrian(self.rng, child=self.rng.random() < 0.1)
        category = "human.pedestrian.child" if prop.size[2] < 1.4 else "human.pedestrian.adult"
        self.agent(prop, category, x, y, yaw, self.rng.uniform(0.8, 1.6) if walking else 0.0,
                   "pedestrian.moving" if walking else "pedestrian.standing", CURB)

    def vehicle(self, x: float, y: float, yaw: float, speed: float, attribute: str) -> None:
        kind = self.rng.choice(["car", "truck", "bus", "motorcycle"], p=[0.78, 0.1, 0.06, 0.06])
        if kind == "motorcycle":
            prop, cat = props.cycle(self.rng, motor=True, rider=attribute != "vehicle.parked"), "vehicle.motorcycle"
            attribute = "cycle.with_rider" if attribute != "vehicle.parked" else "cycle.without_rider"
        else:
            prop = {"car": props.car, "truck": props.truck, "bus": props.bus}[kind](self.rng)
            cat = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid"}[kind]
        self.agent(prop, cat, x, y, yaw, speed, attribute)

    def traffic(self, road: Road, s0: float, s1: float) -> None:
        """Moving vehicles in every lane of both directions between ``s0`` and ``s1`` at time 0."""
        rng = self.rng
        for forward in (True, False):
            for lane in range(road.lanes):
                speed = rng.uniform(6, 12)
                heading = road.heading + (0 if forward else np.pi)
                s = s0 + rng.uniform(0, 20)
                while s < s1:
                    x, y = road.xy(s, road.lane_d(lane, forward))
                    self.vehicle(x, y, heading, speed, "vehicle.moving")
                    s += rng.uniform(18, 60)

    def parked(self, road: Road, s0: float, s1: float, holes: list[tuple[float, float]]) -> None:
        """Parked cars in the kerbside parking lanes."""
        if not road.parking:
            return
        for side, forward in ((-1, True), (1, False)):
            for a, b in _intervals(s0, s1, holes):
                for s in np.arange(a + self.rng.uniform(0, 4), b - 3, 6.5):
                    if self.rng.random() < 0.6:
                        x, y = road.xy(s, side * (road.half_width - PARKING_LANE / 2))
                        self.vehicle(x, y, road.heading + (0 if forward else np.pi), 0.0, "vehicle.parked")

    def people(self, road: Road, width: float, s0: float, s1: float, holes: list[tuple[float, float]],
               count: int) -> None:
        """Pedestrians walking or standing on the sidewalks, parked bicycles, bins."""
        rng = self.rng
        hw = road.half_width
        intervals = _intervals(s0, s1, holes)
        lengths = np.array([b - a for a, b in intervals])
        for _ in range(count):
            k = rng.choice(len(intervals), p=lengths / lengths.sum())
            s = rng.uniform(*intervals[k])
            side = rng.choice([-1, 1])
            kind = rng.random()
            if kind < 0.75:
                walking = rng.random() < 0.65
                direction = bool(rng.random() < 0.5)
                x, y = road.xy(s, side * (hw + width * (0.35 if direction else 0.7)))
                self.pedestrian(x, y, road.heading + (0 if direction else np.pi), walking)
            elif kind < 0.88:
                x, y = road.xy(s, side * (hw + width - 0.6))
                self.agent(props.cycle(rng, motor=False, rider=False), "vehicle.bicycle", x, y,
                           road.heading + rng.normal(0, 0.2), 0.0, "cycle.without_rider", CURB)
            else:
                x, y = road.xy(s, side * (hw + 1.2))
                self.agent(props.trash_bin(rng), "movable_object.pushable_pullable", x, y, road.heading, 0.0, "", CURB)

    def roadworks(self, road: Road, s: float, side: int) -> None:
        """A short line of cones and barriers along the kerb on one side."""
        d = side * (road.half_width - 0.8)
        for k in range(self.rng.integers(3, 8)):
            x, y = road.xy(s + 2.2 * k, d)
            if self.rng.random() < 0.6:
                self.agent(props.traffic_cone(self.rng), "movable_object.trafficcone", x, y, 0.0)
            else:
                self.agent(props.barrier(self.rng), "movable_object.barrier", x, y, road.heading)

    def cleared(self, ego: EgoPath, times: np.ndarray) -> list[Agent]:
        """Agents that never overlap the ego, an obstacle or an earlier kept agent at ``times``."""
        discs_t = [_discs(EGO_SIZE[0], EGO_SIZE[1], np.stack(ego.state(times), 1), 1.3)]
        obstacles = np.array(self.obstacles).reshape(-1, 3)
        kept = []
        for agent in self.agents:
            c = agent.center(times)
            mine = _discs(agent.prop.size[0], agent.prop.size[1],
                          np.concatenate([c[:, :2], np.full((len(times), 1), agent.yaw)], 1), 0.0)
            if any(_overlap(mine, other) for other in discs_t):
                continue
            if len(obstacles) and _overlap(mine, np.broadcast_to(obstacles[None], (len(times),) + obstacles.shape)):
                continue
            kept.append(agent)
            discs_t.append(mine)
        return kept


def _discs(width: float, length: float, states: np.ndarray, forward: float) -> np.ndarray:
    """``(T, K, 3)`` discs ``(x, y, r)`` covering a ``width x length`` footprint at ``(T, 3)`` states."""
    k = max(1, int(np.ceil(length / width)))
    offsets = forward + (np.arange(k) + 0.5) * length / k - length / 2
    x = states[:, None, 0] + offsets[None] * np.cos(states[:, None, 2])
    y = states[:, None, 1] + offsets[None] * np.sin(states[:, None, 2])
    r = np.full_like(x, 0.5 * np.hypot(width, length / k) + 0.25)
    return np.stack([x, y, r], -1)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether any disc of ``a (T, K, 3)`` overlaps any disc of ``b (T, M, 3)`` at the same time."""
    d = np.linalg.norm(a[:, :, None, :2] - b[:, None, :, :2], axis=-1)
    return bool((d < a[:, :, None, 2] + b[:, None, :, 2]).any())


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------
def _street_road(rng: np.random.Generator, axis: int, center: float) -> Road:
    return Road(axis, center, lanes=int(rng.choice([1, 2], p=[0.55, 0.45])), parking=bool(rng.random() < 0.6))


def straight(w: WorldBuilder, duration: float) -> EgoPath:
    rng = w.rng
    road = _street_road(rng, 0, 0.0)
    sidewalk = rng.uniform(3, 5)
    w.road(road, -EXTENT, EXTENT, [])
    w.sidewalks(road, sidewalk, -EXTENT, EXTENT, [])
    w.frontage(road, road.half_width + sidewalk, -EXTENT, EXTENT, [])
    w.furniture(road, sidewalk, -EXTENT, EXTENT, [])
    speed = rng.uniform(6, 11)
    lane = int(rng.integers(road.lanes))
    ego = EgoPath(rng.uniform(-30, -10), road.lane_d(lane, True), 0.0, speed, straight=1e9)
    x_end = ego.x0 + speed * duration
    w.agent(props.car(rng), "vehicle.car", ego.x0 + rng.uniform(12, 25), ego.y0, 0.0, speed, "vehicle.moving")
    w.roadworks(road, rng.uniform(ego.x0, x_end + 30), int(rng.choice([-1, 1])))
    w.traffic(road, -120, 160)
    w.parked(road, -80, 120, [])
    w.people(road, sidewalk, -60, 110, [], int(rng.integers(12, 30)))
    return ego


def _left_turn_radius(road_a: Road, road_b: Road, xi: float, lane_a: float, lane_b: float) -> float | None:
    """Largest radius of a left turn from ``lane_a`` (heading +x) into ``lane_b`` (heading +y) of a
    crossing at ``x = xi`` that clears the inner kerb corner by 2 m and the outer corners by 2 m."""
    for radius in np.arange(14.0, 5.0, -0.5):
        c = np.array([xi + lane_b - radius, lane_a + radius])
        inner = np.hypot(*(c - [xi - road_b.half_width, road_a.half_width]))
        outer = min(np.hypot(*(c - [xi + road_b.half_width, road_a.half_width])),
                    np.hypot(*(c - [xi - road_b.half_width, -road_a.half_width])))
        if inner < radius - 2.0 - EGO_SIZE[0] / 2 and outer > radius + 2.0 and c[0] - xi > -EXTENT:
            return float(radius)
    return None


def intersection(w: WorldBuilder, duration: float) -> tuple[EgoPath, bool]:
    rng = w.rng
    road_a = _street_road(rng, 0, 0.0)
    speed = rng.uniform(4.5, 6.5)
    x0 = rng.uniform(-30, -15)
    xi = x0 + speed * duration * rng.uniform(0.4, 0.8) + rng.uniform(8, 15)
    road_b = _street_road(rng, 1, xi)
    walk_a, walk_b = rng.uniform(3, 5), rng.uniform(3, 5)
    hole_a, hole_b = (xi - road_b.half_width, xi + road_b.half_width), (-road_a.half_width, road_a.half_width)
    w.road(road_a, -EXTENT, EXTENT, [hole_a])
    w.road(road_b, -EXTENT, EXTENT, [hole_b])
    w.sidewalks(road_a, walk_a, -EXTENT, EXTENT, [hole_a])
    w.sidewalks(road_b, walk_b, -EXTENT, EXTENT, [(hole_b[0] - walk_a, hole_b[1] + walk_a)])
    wide_a = (hole_a[0] - walk_b - 1, hole_a[1] + walk_b + 1)
    wide_b = (hole_b[0] - walk_a - 1, hole_b[1] + walk_a + 1)
    w.frontage(road_a, road_a.half_width + walk_a, -EXTENT, EXTENT, [wide_a])
    w.frontage(road_b, road_b.half_width + walk_b, -EXTENT, EXTENT, [(wide_b[0] - 25, wide_b[1] + 25)])
    w.furniture(road_a, walk_a, -EXTENT, EXTENT, [wide_a])
    w.furniture(road_b, walk_b, -EXTENT, EXTENT, [wide_b])
    for sx, sy in ((-1, -1), (1, 1), (-1, 1), (1, -1)):
        props.traffic_light(w.b, xi + sx * (road_b.half_width + 0.6), sy * (road_a.half_width + 0.6),
                            np.arctan2(-sy, -sx))
        w.obstacles.append((xi + sx * (road_b.half_width + 0.6), sy * (road_a.half_width + 0.6), 0.3))
    lane = int(rng.integers(road_a.lanes))
    lane_a = road_a.lane_d(lane, True)
    radius = _left_turn_radius(road_a, road_b, xi, lane_a, -road_b.lane_d(0, True))
    turn = radius is not None and rng.random() < 0.6
    if turn:
        ego = EgoPath(x0, lane_a, 0.0, speed, straight=xi - road_b.lane_d(0, True) - radius - x0, turn=np.pi / 2,
                      radius=radius)
    else:
        ego = EgoPath(x0, lane_a, 0.0, speed, straight=1e9)
    # Cross traffic waits at the stop lines; traffic on road A and leaving on road B moves.
    for side in (1, -1):
        for k in range(rng.integers(1, 4)):
            s = side * (road_a.half_width + 6 + 7 * k)
            d = road_b.lane_d(0, side < 0)
            x, y = road_b.xy(s, d)
            w.vehicle(x, y, road_b.heading + (np.pi if side > 0 else 0), 0.0, "vehicle.stopped")
    w.traffic(road_a, -150, xi - road_b.half_width - 8)
    for forward, (s0, s1) in ((True, (road_a.half_width + 25, 150)), (False, (-150, -road_a.half_width - 25))):
        for s in np.arange(s0, s1, rng.uniform(25, 50)):
            x, y = road_b.xy(s, road_b.lane_d(0, forward))
            w.vehicle(x, y, road_b.heading + (0 if forward else np.pi), rng.uniform(6, 10), "vehicle.moving")
    w.parked(road_a, -80, 120, [wide_a])
    w.parked(road_b, -80, 80, [wide_b])
    w.people(road_a, walk_a, -50, 100, [wide_a], int(rng.integers(8, 20)))
    w.people(road_b, walk_b, -60, 60, [wide_b], int(rng.integers(5, 14)))
    w.roadworks(road_b, rng.uniform(-50, -20) * rng.choice([-1, 1]), int(rng.choice([-1, 1])))
    return ego, turn


def parking(w: WorldBuilder, duration: float) -> EgoPath:
    """An open lot: one aisle (the ego's) between two rows of bays, a second aisle on each side."""
    rng = w.rng
    speed = rng.uniform(3, 5)
    x0 = rng.uniform(-25, -10)
    x_lo, x_hi = x0 - 40, x0 + speed * duration + 50
    aisle, bay = 6.5, 5.5
    y_hi = aisle / 2 + 2 * bay + aisle
    lot = Road(0, 0.0, lanes=0, parking=False)
    _add_rect(w.b, lot, x_lo, x_hi, -y_hi, y_hi, 0.0, 0, "flat.driveable_surface", Mat.ASPHALT,
              np.array([0.12, 0.12, 0.12]) * rng.uniform(0.8, 1.2))
    w.footprints.append(lot.rect(x_lo, x_hi, -y_hi, y_hi))
    width = 3.0
    for d0 in (y_hi, -y_hi - width):
        _add_rect(w.b, lot, x_lo - width, x_hi + width, d0, d0 + width, 0.0, CURB, "flat.sidewalk", Mat.CONCRETE,
                  (0.42, 0.41, 0.39))
        w.footprints.append(lot.rect(x_lo - width, x_hi + width, d0, d0 + width))
    bay_w = 2.6
    rows = [aisle / 2, -aisle / 2 - bay, aisle / 2 + bay, -aisle / 2 - 2 * bay]  # near edge of each bay row
    island_every = int(rng.integers(8, 13))
    for r, d0 in enumerate(rows):
        for k, s in enumerate(np.arange(x_lo + 3, x_hi - 3 - bay_w, bay_w)):
            _add_rect(w.b, lot, s - 0.06, s + 0.06, d0 + 0.3, d0 + bay - 0.3, 0.01, 0, "flat.driveable_surface",
                      Mat.PAINT, (0.75, 0.75, 0.72))
            if k % island_every == island_every - 1 and r < 2:
                _add_rect(w.b, lot, s, s + bay_w, d0 + 0.2, d0 + bay - 0.2, 0.0, 0.12, "flat.other", Mat.GRASS,
                          (0.2, 0.25, 0.1))
                props.tree(w.b, rng, s + bay_w / 2, d0 + bay / 2)
                w.obstacles.append((s + bay_w / 2, d0 + bay / 2, bay_w))
                if k % (2 * island_every) == island_every - 1:
                    w.lamps.append(props.street_lamp(w.b, s + bay_w / 2, d0 + bay / 2 + 0.8, -np.pi / 2, 8.0))
            elif rng.random() < 0.7:
                facing = np.pi / 2 if d0 > 0 else -np.pi / 2
                if rng.random() < 0.5:
                    facing += np.pi
                w.vehicle(s + bay_w / 2, d0 + bay / 2, facing + rng.normal(0, 0.04), 0.0, "vehicle.parked")
    ring = Road(0, 0.0, lanes=0, parking=False)
    w.frontage(ring, y_hi + width, x_lo - 40, x_hi + 40, [])
    for s in np.arange(x_lo, x_hi, rng.uniform(10, 20)):
        for side in (-1, 1):
            if rng.random() < 0.5:
                w.pedestrian(s + rng.uniform(-2, 2), side * (y_hi + width / 2), rng.choice([0.0, np.pi]),
                             walking=rng.random() < 0.6)
    for s in np.arange(x_lo + 5, x_hi - 5, rng.uniform(12, 25)):
        w.agent(props.barrier(rng), "movable_object.barrier", s, -y_hi + 0.6, 0.0)
    ego = EgoPath(x0, -1.6, 0.0, speed, straight=1e9)
    w.agent(props.car(rng), "vehicle.car", x0 + 40, 1.6, np.pi, speed * 0.8, "vehicle.moving")
    return ego
