"""Orchestration: plan the scenes, render every sample, write a nuScenes-format dataset.

Every scene draws from its own seeds (derived from the dataset seed and the scene name), so scenes
can be generated in any order or in parallel worker processes and the files are byte-identical.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from collab_distill.config import config_to_dict
from collab_distill.geometry import invert_pose, matrix_to_quaternion
from data_prep.synthetic import writer
from data_prep.synthetic.config import (
    MARKER,
    Condition,
    ConfigError,
    SyntheticConfig,
    check_output_dir,
    validate_config,
)
from data_prep.synthetic.layouts import LAYOUTS
from data_prep.synthetic.meshes import TriMesh
from data_prep.synthetic.render import LidarScan, RayCaster, render_gbuffer, scan_lidar
from data_prep.synthetic.scene import build_scene
from data_prep.synthetic.sensors import CAMERAS, LIDAR, LIDAR_PERIOD, camera_rays, camera_time_offset
from data_prep.synthetic.shading import shade, sun_visibility, surfaces
from data_prep.synthetic.taxonomy import NOISE, visibility_token
from data_prep.synthetic.weather import atmosphere_for, camera_image, clear_atmosphere, lidar_returns, lighting_for

log = logging.getLogger(__name__)

KEYFRAME_PERIOD = 0.5           # s, 2 Hz
ANNOTATION_RANGE = 60.0         # m, objects further than this from the ego are not annotated
BASE_TIMESTAMP = 1_717_200_000_000_000  # us, 2024-06-01; scene i starts i hours later
LOCATIONS = ("boston-seaport", "singapore-onenorth", "boston-seaport", "singapore-queenstown")


@dataclass(frozen=True)
class ScenePlan:
    """What one scene will be: its official name and split, condition, layout, location, seed."""

    index: int
    name: str
    split: str
    condition: Condition
    layout: str
    location: str
    seed: int


def _split_names(version: str) -> tuple[list[str], list[str]]:
    from nuscenes.utils import splits

    if version == "v1.0-mini":
        return list(splits.mini_train), list(splits.mini_val)
    return list(splits.train), list(splits.val)


def plan_scenes(cfg: SyntheticConfig) -> list[ScenePlan]:
    """Pick official scene names and give each a condition.

    Val scenes: one per ``val_conditions`` entry, with that condition, when the list is given;
    otherwise in proportion to the official split (at least one when there are two or more scenes).
    Other conditions: if ``clear`` is listed, every other scene of each split is clear (train starts
    with clear, val with an adverse scene) and the adverse conditions take turns over the rest, train
    first; otherwise all listed conditions take turns.
    """
    train, val = _split_names(cfg.version)
    total = len(train) + len(val)
    if cfg.scenes > total:
        raise ConfigError(f"{cfg.version} has {total} official scene names; asked for {cfg.scenes} scenes")
    if len(cfg.val_conditions) > len(val):
        raise ConfigError(f"{cfg.version} has {len(val)} official val scene names; val_conditions asks for "
                          f"{len(cfg.val_conditions)} (use version v1.0-trainval)")
    if cfg.val_conditions:
        n_val = len(cfg.val_conditions)
    else:
        n_val = 0 if cfg.scenes == 1 else min(len(val), max(1, round(cfg.scenes * len(val) / total)))
    n_train = min(len(train), cfg.scenes - n_val)
    n_val = cfg.scenes - n_train
    conditions = cfg.parsed_conditions()
    clear = [c for c in conditions if not c.adverse]
    adverse = [c for c in conditions if c.adverse]
    chosen: list[tuple[str, str, Condition]] = []
    turn = 0
    for split, names, clear_first in (("train", train[:n_train], True), ("val", val[:n_val], False)):
        for j, name in enumerate(names):
            if split == "val" and cfg.val_conditions:
                cond = Condition.parse(cfg.val_conditions[j])
            elif adverse and (not clear or (j % 2 == 0) != clear_first):
                cond, turn = adverse[turn % len(adverse)], turn + 1
            else:
                cond = clear[0]
            chosen.append((name, split, cond))
    chosen.sort(key=lambda item: item[0])
    return [ScenePlan(index=i, name=name, split=split, condition=cond, layout=LAYOUTS[(i + cfg.seed) % len(LAYOUTS)],
                      location=LOCATIONS[i % len(LOCATIONS)],
                      seed=int(writer.make_token(cfg.seed, name)[:8], 16))
            for i, (name, split, cond) in enumerate(chosen)]


# --------------------------------------------------------------------------------------------
# One scene
# --------------------------------------------------------------------------------------------
@dataclass
class SceneResult:
    """Tables of one scene plus counts for the summary."""

    tables: writer.Tables
    points: int = 0
    noise_points: int = 0
    annotations: int = 0
    paired_images: int = 0


@dataclass
class _Camera:
    channel: str
    k: np.ndarray
    cam2ego: np.ndarray
    offset: float
    calib_token: str
    rays: np.ndarray  # (H * W, 3) pixel rays in the camera frame


@dataclass
class _Track:
    """Per-agent bookkeeping across the samples of a scene."""

    lidar_pts: list[int] = field(default_factory=list)
    visible: list[float] = field(default_factory=list)
    near: list[bool] = field(default_factory=list)


def _pose_record(matrix: np.ndarray) -> tuple[list[float], list[float]]:
    return matrix[:3, 3].tolist(), matrix_to_quaternion(matrix[:3, :3]).tolist()


def _rig(cfg: SyntheticConfig) -> list[_Camera]:
    cams = []
    for c in CAMERAS:
        k = c.intrinsics(cfg.image_size)
        cams.append(_Camera(c.channel, k, c.cam2ego(), camera_time_offset(c),
                            writer.make_token(cfg.seed, "calibrated_sensor", c.channel), camera_rays(k, cfg.image_size)))
    return cams


def sensor_tables(cfg: SyntheticConfig) -> writer.Tables:
    """The sensor and calibrated_sensor tables (one calibration for the whole dataset)."""
    tables = writer.Tables()
    for cam in _rig(cfg):
        tables.add("sensor", token=writer.make_token("sensor", cam.channel), channel=cam.channel, modality="camera")
        trans, rot = _pose_record(cam.cam2ego)
        tables.add("calibrated_sensor", token=cam.calib_token, sensor_token=writer.make_token("sensor", cam.channel),
                   translation=trans, rotation=rot, camera_intrinsic=cam.k.tolist())
    tables.add("sensor", token=writer.make_token("sensor", LIDAR.channel), channel=LIDAR.channel, modality="lidar")
    trans, rot = _pose_record(LIDAR.lidar2ego())
    tables.add("calibrated_sensor", token=writer.make_token(cfg.seed, "calibrated_sensor", LIDAR.channel),
               sensor_token=writer.make_token("sensor", LIDAR.channel), translation=trans, rotation=rot,
               camera_intrinsic=[])
    return tables


def _visible_fraction(mesh: TriMesh, inst_maps: list[np.ndarray], cams: list[tuple[np.ndarray, np.ndarray]],
                      num_agents: int) -> np.ndarray:
    """``(A,)`` area fraction of each agent's camera-facing surface seen in at least one image.

    Args:
        mesh: the frozen world; inst_maps: ``(H, W)`` instance map per camera;
        cams: ``(scene2cam (4, 4), K (3, 3))`` per camera.
    """
    agent_tris = np.flatnonzero(mesh.instance >= 0)
    v = mesh.vertices[mesh.triangles[agent_tris]]  # (T, 3, 3)
    centroid = v.mean(axis=1)
    cross = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    owner = mesh.instance[agent_tris]
    candidate = np.zeros(agent_tris.size, bool)
    seen = np.zeros(agent_tris.size, bool)
    for inst, (scene2cam, k) in zip(inst_maps, cams):
        height, width = inst.shape
        cam_pts = centroid @ scene2cam[:3, :3].T + scene2cam[:3, 3]
        cam_centre = invert_pose(scene2cam)[:3, 3]
        facing = np.einsum("ij,ij->i", cross, centroid - cam_centre) < 0
        z = cam_pts[:, 2]
        uv = (cam_pts @ k.T)[:, :2] / np.maximum(z, 1e-6)[:, None]
        col, row = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        inside = facing & (z > 0.5) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        candidate |= inside
        idx = np.flatnonzero(inside)
        seen[idx] |= inst[row[idx], col[idx]] == owner[idx]
    total = np.bincount(owner, weights=area * candidate, minlength=num_agents)
    visible = np.bincount(owner, weights=area * seen, minlength=num_agents)
    return np.where(total > 0, visible / np.maximum(total, 1e-9), 0.0)


def generate_scene(plan: ScenePlan, cfg: SyntheticConfig, root: Path,
                   on_sample: Callable[[], None] | None = None) -> SceneResult:
    """Render and write every sample of one scene under ``root``; return its table records."""
    job = _SceneJob(plan, cfg, root)
    for i in range(cfg.samples_per_scene):
        job.sample(i)
        if on_sample is not None:
            on_sample()
    return job.finish()


class _SceneJob:
    """The state of one scene while its samples are rendered (see :func:`generate_scene`)."""

    def __init__(self, plan: ScenePlan, cfg: SyntheticConfig, root: Path) -> None:
        self.start = time.perf_counter()
        self.plan, self.cfg, self.root = plan, cfg, root
        scene_rng, self.lidar_rng, self.cam_rng, self.clear_rng, weather_rng = (
            np.random.default_rng([plan.seed, k]) for k in range(5))
        self.sweep_rng = np.random.default_rng([plan.seed, 5])  # its own stream: keyframes do not depend on it
        self.scene = build_scene(plan.condition, plan.layout, plan.location, cfg.samples_per_scene, scene_rng)
        self.atm = atmosphere_for(plan.condition, cfg.weather, weather_rng)
        self.lighting = lighting_for(self.atm, self.scene)
        self.paired = cfg.paired_clear and plan.condition.adverse
        self.clear_atm = clear_atmosphere(cfg.weather)
        self.clear_lighting = lighting_for(self.clear_atm, self.scene)
        self.cams = _rig(cfg)
        self.logfile = f"syn{plan.index:03d}-2024-06-01-{plan.index % 24:02d}-00-00+0000"
        self.base_ts = BASE_TIMESTAMP + plan.index * 3_600_000_000
        self.result = SceneResult(writer.Tables())
        self.tables = self.result.tables
        self.log_token = self.token("log")
        self.map_token = self.token("map")
        self.tables.add("log", token=self.log_token, logfile=self.logfile, vehicle="syn-ego",
                        date_captured="2024-06-01", location=plan.location)
        self.tables.add("map", token=self.map_token, log_tokens=[self.log_token], category="semantic_prior",
                        filename=f"maps/{self.map_token}.png")
        self.samples: list[dict] = []
        self.chains: dict[str, list[dict]] = {c.channel: [] for c in self.cams} | {LIDAR.channel: []}
        self.tracks = [_Track() for _ in self.scene.agents]
        self.ego_xy: list[np.ndarray] = []

    def token(self, *parts: object) -> str:
        return writer.make_token(self.cfg.seed, self.plan.name, *parts)

    def time(self, timestamp: int) -> float:
        """Scene time (s) of a timestamp (us)."""
        return (timestamp - self.base_ts) / 1e6

    def sample(self, i: int) -> None:
        """Freeze the world at keyframe ``i``; write the sweeps before it, its own sweep, images and sample_data."""
        ts = self.base_ts + round(i * KEYFRAME_PERIOD * 1e6)
        sample = self.tables.add("sample", token=self.token("sample", i), timestamp=ts,
                                 scene_token=self.token("scene"), prev="", next="")
        self.samples.append(sample)
        if i:
            self._sweeps(i, ts)
        mesh = self.scene.mesh_at(self.time(ts))
        caster = RayCaster(mesh)
        counts = self._lidar(i, ts, caster)
        inst_maps, cam_poses = [], []
        for cam in self.cams:
            inst, scene2cam = self._camera(i, ts, cam, caster)
            inst_maps.append(inst)
            cam_poses.append((scene2cam, cam.k))
        fraction = _visible_fraction(mesh, inst_maps, cam_poses, len(self.scene.agents))
        ego_xy = self.scene.ego.matrix(self.time(ts))[:2, 3]
        for a, (agent, track) in enumerate(zip(self.scene.agents, self.tracks)):
            near = np.linalg.norm(agent.center(np.array([self.time(ts)]))[0, :2] - ego_xy) < ANNOTATION_RANGE
            track.lidar_pts.append(int(counts[a]))
            track.visible.append(float(fraction[a]))
            track.near.append(bool(near and (counts[a] > 0 or fraction[a] > 0)))

    def _scan(self, ts: int, caster: RayCaster, folder: str, rng: np.random.Generator
              ) -> tuple[LidarScan, np.ndarray, str]:
        """Scan the frozen world of ``caster`` at ``ts`` (us) with weather and write the ``.pcd.bin``
        under ``<folder>/LIDAR_TOP/``; return the reported points, the ``(4, 4)`` ego -> global pose and
        the file name (relative to the root)."""
        ego = self.scene.ego.matrix(self.time(ts))
        scan = scan_lidar(caster, ego @ LIDAR.lidar2ego(), LIDAR, rng)
        points, intensity = lidar_returns(scan, self.atm, LIDAR.min_range, rng)
        filename = f"{folder}/{LIDAR.channel}/{self.logfile}__{LIDAR.channel}__{ts}.pcd.bin"
        writer.write_points(self.root / filename, points.xyz, intensity, points.ring)
        return points, self.scene.scene2global @ ego, filename

    def _sweeps(self, i: int, ts: int) -> None:
        """Write the ``sweeps_per_keyframe`` non-keyframe sweeps before keyframe ``i`` (at the 20 Hz ticks
        before ``ts``, oldest first, each in the world frozen at its own time), linked into the LiDAR's
        ``sample_data`` chain between keyframes ``i - 1`` and ``i``; no lidarseg, as in nuScenes."""
        for j in range(self.cfg.sweeps_per_keyframe, 0, -1):
            sweep_ts = ts - round(j * LIDAR_PERIOD * 1e6)
            caster = RayCaster(self.scene.mesh_at(self.time(sweep_ts)))
            _, ego2global, filename = self._scan(sweep_ts, caster, "sweeps", self.sweep_rng)
            self._sample_data(LIDAR.channel, self.token("sample_data", LIDAR.channel, i, "sweep", j), sweep_ts,
                              ego2global, writer.make_token(self.cfg.seed, "calibrated_sensor", LIDAR.channel), "pcd",
                              filename, (0, 0), i, sweep=j)

    def _lidar(self, i: int, ts: int, caster: RayCaster) -> np.ndarray:
        """Write the keyframe sweep at the sample time and its labels; return ``(A,)`` LiDAR points per agent."""
        points, ego2global, filename = self._scan(ts, caster, "samples", self.lidar_rng)
        self.ego_xy.append(ego2global[:2, 3])
        sd_token = self.token("sample_data", LIDAR.channel, i)
        label_file = f"lidarseg/{self.cfg.version}/{sd_token}_lidarseg.bin"
        writer.write_labels(self.root / label_file, points.category)
        self.tables.add("lidarseg", token=sd_token, sample_data_token=sd_token, filename=label_file)  # devkit: same
        self._sample_data(LIDAR.channel, sd_token, ts, ego2global,
                          writer.make_token(self.cfg.seed, "calibrated_sensor", LIDAR.channel), "pcd", filename,
                          (0, 0), i)
        self.result.points += len(points.range)
        self.result.noise_points += int((points.category == NOISE).sum())
        return np.bincount(points.instance[points.instance >= 0], minlength=len(self.scene.agents))

    def _camera(self, i: int, ts: int, cam: _Camera, caster: RayCaster) -> tuple[np.ndarray, np.ndarray]:
        """Render and write one camera at its trigger time (and its paired clear image and dense maps).

        Returns:
            the ``(H, W)`` instance map and the ``(4, 4)`` scene -> camera transform.
        """
        cam_ts = ts + round(cam.offset * 1e6)
        ego = self.scene.ego.matrix(self.time(cam_ts))
        cam2scene = ego @ cam.cam2ego
        mesh = caster.mesh
        gbuf = render_gbuffer(caster, cam2scene, cam.rays, self.cfg.image_size)
        surf = surfaces(gbuf, mesh)
        sunny = self.lighting.sun_rgb.max() > 0 or self.paired
        vis = sun_visibility(gbuf, caster, self.scene.sun) if sunny else None
        image = camera_image(shade(gbuf, surf, self.lighting, vis, ego), gbuf, cam.k, self.atm, self.lighting,
                             self.cam_rng)
        filename = f"samples/{cam.channel}/{self.logfile}__{cam.channel}__{cam_ts}.jpg"
        writer.write_jpeg(self.root / filename, image, self.cfg.jpeg_quality)
        self._sample_data(cam.channel, self.token("sample_data", cam.channel, i), cam_ts,
                          self.scene.scene2global @ ego, cam.calib_token, "jpg", filename, self.cfg.image_size, i)
        sample_token = self.samples[-1]["token"]
        if self.paired:
            clear = camera_image(shade(gbuf, surf, self.clear_lighting, vis, ego), gbuf, cam.k, self.clear_atm,
                                 self.clear_lighting, self.clear_rng)
            writer.write_jpeg(self.root / "paired_clear" / sample_token / f"{cam.channel}.jpg", clear,
                              self.cfg.jpeg_quality)
            self.result.paired_images += 1
        if self.cfg.dense_maps:
            writer.write_dense(self.root / "dense" / sample_token, cam.channel, gbuf.class_map(mesh),
                               gbuf.depth_map())
        return gbuf.instance_map(mesh), invert_pose(cam2scene)

    def _sample_data(self, channel: str, token: str, ts: int, ego2global: np.ndarray, calib_token: str,
                     fileformat: str, filename: str, size: tuple[int, int], i: int, sweep: int = 0) -> None:
        """Add the ``sample_data`` record (and its ego pose) of keyframe ``i``'s file, or with ``sweep`` > 0
        of the non-keyframe sweep that many LiDAR periods before it (its sample is keyframe ``i``)."""
        pose_token = self.token("ego_pose", channel, i, *(("sweep", sweep) if sweep else ()))
        trans, rot = _pose_record(ego2global)
        self.tables.add("ego_pose", token=pose_token, timestamp=ts, rotation=rot, translation=trans)
        self.chains[channel].append(self.tables.add(
            "sample_data", token=token, sample_token=self.samples[-1]["token"], ego_pose_token=pose_token,
            calibrated_sensor_token=calib_token, timestamp=ts, fileformat=fileformat, is_key_frame=not sweep,
            height=size[1], width=size[0], filename=filename, prev="", next=""))

    def _annotations(self) -> None:
        """Boxes of every agent from the first to the last sample where it is near and observed."""
        for a, (agent, track) in enumerate(zip(self.scene.agents, self.tracks)):
            observed = np.flatnonzero(track.near)
            if observed.size == 0:
                continue
            instance_token = self.token("instance", a)
            attribute = [writer.make_token("attribute", agent.attribute)] if agent.attribute else []
            anns = []
            for i in range(int(observed[0]), int(observed[-1]) + 1):
                trans, rot = _pose_record(self.scene.scene2global @ agent.box_pose(self.time(self.samples[i]["timestamp"])))
                anns.append(self.tables.add(
                    "sample_annotation", token=self.token("sample_annotation", a, i),
                    sample_token=self.samples[i]["token"], instance_token=instance_token,
                    visibility_token=visibility_token(track.visible[i]), attribute_tokens=attribute,
                    translation=trans, size=[float(v) for v in agent.prop.size], rotation=rot, prev="", next="",
                    num_lidar_pts=track.lidar_pts[i], num_radar_pts=0))
            writer.link_chain(anns)
            self.tables.add("instance", token=instance_token,
                            category_token=writer.make_token("category", agent.category), nbr_annotations=len(anns),
                            first_annotation_token=anns[0]["token"], last_annotation_token=anns[-1]["token"])
            self.result.annotations += len(anns)

    def finish(self) -> SceneResult:
        """Link the chains, add boxes and the scene record, write the map image."""
        writer.link_chain(self.samples)
        for chain in self.chains.values():
            writer.link_chain(chain)
        self._annotations()
        self.tables.add("scene", token=self.token("scene"), log_token=self.log_token, nbr_samples=len(self.samples),
                        first_sample_token=self.samples[0]["token"], last_sample_token=self.samples[-1]["token"],
                        name=self.plan.name, description=self.scene.description)
        to_global = self.scene.scene2global
        footprints = [f @ to_global[:2, :2].T + to_global[:2, 3] for f in self.scene.footprints]
        writer.write_map(self.root / f"maps/{self.map_token}.png", footprints, float(np.max(self.ego_xy)) + 80.0)
        log.debug("%s (%s, %s): %d samples in %.1f s", self.plan.name, self.plan.condition, self.plan.layout,
                  len(self.samples), time.perf_counter() - self.start)
        return self.result


# --------------------------------------------------------------------------------------------
# A dataset
# --------------------------------------------------------------------------------------------
@dataclass
class Summary:
    """What :func:`generate` wrote."""

    root: Path
    version: str
    scenes: list[ScenePlan]
    samples: int
    images: int
    paired_images: int
    points: int
    noise_points: int
    annotations: int
    seconds: float
    bytes: int

    def lines(self) -> list[str]:
        """A human-readable closing summary (the tool's), one fact per line."""
        by_condition = Counter(f"{plan.split}/{plan.condition}" for plan in self.scenes)
        return [
            f"wrote {self.version} to {self.root} in {self.seconds:.1f} s ({self.bytes / 2**20:.1f} MiB)",
            f"  {len(self.scenes)} scenes, {self.samples} samples, {self.images} camera images, "
            f"{self.paired_images} paired clear images",
            f"  {self.points} LiDAR points ({self.noise_points} weather returns), {self.annotations} boxes",
            "  scenes per split/condition: " + ", ".join(f"{k} {v}" for k, v in sorted(by_condition.items())),
        ]

    def __str__(self) -> str:
        """One log line, e.g. ``synthetic v1.0-mini: 10 scenes (clear 4, fog 2, night 2, rain 2), 100 samples,
        41.2 MiB in 12.3 s -> data/synthetic`` (the dataclass repr would list every scene plan)."""
        by_condition = Counter(str(plan.condition) for plan in self.scenes)
        conditions = ", ".join(f"{name} {count}" for name, count in sorted(by_condition.items()))
        return (f"synthetic {self.version}: {len(self.scenes)} scenes ({conditions}), {self.samples} samples, "
                f"{self.bytes / 2**20:.1f} MiB in {self.seconds:.1f} s -> {self.root}")


def _scene_job(args: tuple[ScenePlan, SyntheticConfig, Path]) -> SceneResult:
    return generate_scene(*args)


def generate(cfg: SyntheticConfig, out: str | Path, overwrite: bool = False, workers: int = 1,
             progress: bool = True) -> Summary:
    """Write a synthetic nuScenes-format dataset to ``out``.

    Args:
        cfg: what to generate (validated here).
        out: dataset root; must be empty or absent unless ``overwrite`` (which only replaces a
            folder this generator made).
        workers: scenes rendered in parallel processes (the output does not depend on it).
        progress: show a tqdm progress bar over samples.

    Raises:
        ConfigError: invalid config or unusable output folder (one line).
    """
    from tqdm import tqdm

    validate_config(cfg)
    root = Path(out)
    check_output_dir(root, overwrite)
    plans = plan_scenes(cfg)
    start = time.perf_counter()
    if root.exists() and any(root.iterdir()):
        shutil.rmtree(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    except OSError as exc:
        raise ConfigError(f"cannot write to output '{root}': {exc.strerror or exc}") from None
    log.info("generating %d scenes x %d samples (%s, %dx%d) into %s", len(plans), cfg.samples_per_scene,
             cfg.version, *cfg.image_size, root)
    bar = tqdm(total=len(plans) * cfg.samples_per_scene, unit="sample", disable=not progress)
    results: list[SceneResult] = []
    if workers <= 1:
        for plan in plans:
            results.append(generate_scene(plan, cfg, root, on_sample=lambda: bar.update(1)))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for result in pool.map(_scene_job, [(plan, cfg, root) for plan in plans]):
                results.append(result)
                bar.update(cfg.samples_per_scene)
    bar.close()
    tables = writer.vocabulary_tables()
    tables.extend(sensor_tables(cfg))
    for result in results:
        tables.extend(result.tables)
    tables.write(root / cfg.version)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return Summary(root=root, version=cfg.version, scenes=plans, samples=len(plans) * cfg.samples_per_scene,
                   images=len(plans) * cfg.samples_per_scene * len(CAMERAS),
                   paired_images=sum(r.paired_images for r in results), points=sum(r.points for r in results),
                   noise_points=sum(r.noise_points for r in results),
                   annotations=sum(r.annotations for r in results), seconds=time.perf_counter() - start, bytes=size)
