"""The synthetic world: the official devkit is the oracle for the format and the projection chain."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from collab_distill import geometry as G
from collab_distill.config import ConfigError, load_config
from data_prep.synthetic import taxonomy
from data_prep.synthetic.config import Condition, SyntheticConfig, check_output_dir, validate_config
from data_prep.synthetic.writer import read_dense

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]
VERSION = "v1.0-mini"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")


@pytest.fixture(scope="module")
def nusc(synthetic_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(synthetic_root), verbose=False)


def _pose(nusc, sd: dict) -> tuple[np.ndarray, np.ndarray]:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    return G.pose_matrix(cs["translation"], cs["rotation"]), G.pose_matrix(ep["translation"], ep["rotation"])


def _points_and_labels(nusc, root: Path, lidar_token: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 5)`` x, y, z, intensity, ring as stored, and the ``(N,)`` lidarseg labels (devkit readers)."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.data_io import load_bin_file

    path = root / nusc.get("sample_data", lidar_token)["filename"]
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    assert LidarPointCloud.from_file(str(path)).points.shape == (4, len(points))
    labels = load_bin_file(str(root / nusc.get("lidarseg", lidar_token)["filename"]))
    return points, labels


# ----------------------------------------------------------------------------- format
def test_devkit_loads_scenes_splits_and_sample_data(nusc, synthetic_root):
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    names = {s["name"]: s for s in nusc.scene}
    assert set(names) == {"scene-0061", "scene-0103"}
    assert "scene-0061" in splits["mini_train"] and "scene-0103" in splits["mini_val"]
    assert "clear" in names["scene-0061"]["description"].lower()
    words = [w.strip() for w in names["scene-0103"]["description"].lower().split(",")]
    assert "night" in words and "rain" in words and "clear" not in words
    sweeps = SyntheticConfig().sweeps_per_keyframe * 2 * (2 - 1)  # per keyframe but each scene's first
    assert len(nusc.sample) == 4 and len(nusc.sample_data) == 4 * 7 + sweeps and sweeps > 0
    for sample in nusc.sample:
        assert set(sample["data"]) == set(CAMERAS) | {"LIDAR_TOP"}
        path, boxes, k = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
        assert Path(path).is_file() and k.shape == (3, 3) and k[0, 0] > 100
        sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        assert Image.open(path).size == (sd["width"], sd["height"]) == (224, 126)
        lidar_path, lidar_boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        assert Path(lidar_path).is_file() and len(lidar_boxes) == len(sample["anns"]) > 5


def test_lidarseg_labels_match_points(nusc, synthetic_root):
    seen = set()
    for sample in nusc.sample:
        points, labels = _points_and_labels(nusc, synthetic_root, sample["data"]["LIDAR_TOP"])
        assert points.shape[1] == 5 and labels.shape == (points.shape[0],) and points.shape[0] > 20000
        assert labels.dtype == np.uint8 and labels.max() < 32
        ring, intensity = points[:, 4], points[:, 3]
        assert set(np.unique(ring)) <= set(range(32)) and len(np.unique(ring)) > 20
        assert 0 <= intensity.min() and intensity.max() <= 255 and intensity.std() > 5
        rng = np.linalg.norm(points[:, :3], axis=1)
        assert rng.min() >= 0.9 and rng.max() <= 80.5
        scene = nusc.get("scene", sample["scene_token"])
        noise = (labels == taxonomy.NOISE).mean()
        assert (noise > 0.001) if "rain" in scene["description"] else (noise == 0)
        seen |= set(np.unique(labels).tolist())
    names = {taxonomy.CATEGORY_NAMES[i] for i in seen}
    assert {"flat.driveable_surface", "flat.sidewalk", "static.manmade", "static.vegetation", "vehicle.car"} <= names


def test_devkit_renders_pngs(nusc, tmp_path):
    sample = nusc.sample[0]
    outputs = {
        "pc_in_image.png": lambda p: nusc.render_pointcloud_in_image(
            sample["token"], camera_channel="CAM_FRONT", show_lidarseg=True, out_path=str(p), verbose=False),
        "lidar.png": lambda p: nusc.render_sample_data(sample["data"]["LIDAR_TOP"], show_lidarseg=True,
                                                       out_path=str(p), verbose=False),
        "camera.png": lambda p: nusc.render_sample_data(sample["data"]["CAM_FRONT"], out_path=str(p), verbose=False),
    }
    for name, render in outputs.items():
        render(tmp_path / name)
        image = np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=np.float32)
        assert image.shape[0] > 200 and image.std() > 20, name
    matplotlib.pyplot.close("all")


def test_category_table_and_16_class_mapping(nusc):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.utils.color_map import get_colormap

    assert list(get_colormap()) == list(taxonomy.CATEGORY_NAMES)  # the devkit's official order
    assert {c["name"]: c["index"] for c in nusc.category} == taxonomy.NAME_TO_INDEX
    mapper = LidarsegClassMapper(nusc)
    assert mapper.fine_name_2_coarse_name_mapping == taxonomy.FINE_TO_COARSE
    assert mapper.coarse_name_2_coarse_idx_mapping == {n: i for i, n in enumerate(taxonomy.COARSE_CLASSES)}
    lut = taxonomy.fine_to_coarse_lut()
    assert lut.shape == (32,)
    assert all(lut[i] == mapper.fine_idx_2_coarse_idx_mapping[i] for i in range(32))
    assert set(lut.tolist()) == set(range(17))  # every benchmark class has a fine class


def test_annotations_are_chained_and_hold_their_points(nusc, synthetic_root):
    from nuscenes.utils.geometry_utils import points_in_box

    categories = {inst["token"]: nusc.get("category", inst["category_token"])["name"] for inst in nusc.instance}
    checked = 0
    for inst in nusc.instance:
        chain, token = [], inst["first_annotation_token"]
        while token:
            chain.append(nusc.get("sample_annotation", token))
            token = chain[-1]["next"]
        assert len(chain) == inst["nbr_annotations"] and chain[-1]["token"] == inst["last_annotation_token"]
    for sample in nusc.sample:
        points, labels = _points_and_labels(nusc, synthetic_root, sample["data"]["LIDAR_TOP"])
        _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            assert min(ann["size"]) > 0.03 and ann["visibility_token"] in {"1", "2", "3", "4"}
            if ann["num_lidar_pts"] < 5:
                continue
            box.wlh = box.wlh + 0.3  # range noise along grazing rays
            inside = points_in_box(box, points[:, :3].T)
            name = categories[ann["instance_token"]]
            assert inside.sum() >= 0.98 * ann["num_lidar_pts"]
            assert (labels[inside] == taxonomy.NAME_TO_INDEX[name]).sum() >= 0.9 * ann["num_lidar_pts"], name
            checked += 1
    assert checked > 10


def test_cameras_fire_before_the_lidar_while_the_ego_moves(nusc):
    for sample in nusc.sample:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert lidar["timestamp"] == sample["timestamp"]
        _, ego_lidar = _pose(nusc, lidar)
        offsets = []
        for cam in CAMERAS:
            sd = nusc.get("sample_data", sample["data"][cam])
            offsets.append(sd["timestamp"] - lidar["timestamp"])
            _, ego_cam = _pose(nusc, sd)
            if offsets[-1] < -5000:  # > 5 ms earlier: the ego has moved at least a few cm
                assert np.linalg.norm(ego_cam[:3, 3] - ego_lidar[:3, 3]) > 0.02
        assert all(-50_000 <= o <= 0 for o in offsets) and len(set(offsets)) == 6


# ----------------------------------------------------------------------------- projection
def _chains(nusc, sample: dict, cam: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full devkit chain, the chain without the global round trip, and K."""
    lidar2ego, ego_lidar = _pose(nusc, nusc.get("sample_data", sample["data"]["LIDAR_TOP"]))
    cam_sd = nusc.get("sample_data", sample["data"][cam])
    cam2ego, ego_cam = _pose(nusc, cam_sd)
    k = np.array(nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])["camera_intrinsic"])
    full = G.compose_lidar2cam(lidar2ego, ego_lidar, ego_cam, cam2ego)
    naive = G.invert_pose(cam2ego) @ lidar2ego  # LiDAR -> ego -> camera, as if both fired at once
    return full, naive, k


def _projection_stats(nusc, root: Path, full_chain: bool) -> tuple[float, float, int]:
    """Over all samples and cameras: the fraction of labelled points whose pixel shows a surface at
    the point's depth (not occluded), the class agreement among those, and their number."""
    visible = agree = total = 0
    for sample in nusc.sample:
        points, labels = _points_and_labels(nusc, root, sample["data"]["LIDAR_TOP"])
        for cam in CAMERAS:
            full, naive, k = _chains(nusc, sample, cam)
            class_map, depth_map = read_dense(root / "dense" / sample["token"], cam)
            pairs = G.project_to_pairs(points, (full if full_chain else naive)[None], k[None], class_map.shape,
                                       min_depth=1.0, dtype=torch.float64)
            idx, depth = pairs.point_idx.numpy(), pairs.depth.numpy()
            col, row = np.round(pairs.uv.numpy()).astype(int).T
            labelled = labels[idx] != taxonomy.NOISE
            at_depth = labelled & (np.abs(depth_map[row, col] - depth) < 0.1 + 0.03 * depth)
            total += labelled.sum()
            visible += at_depth.sum()
            agree += (at_depth & (class_map[row, col] == labels[idx])).sum()
    return visible / total, agree / visible, int(visible)


@pytest.fixture(scope="module")
def full_chain_stats(nusc, synthetic_root) -> tuple[float, float, int]:
    return _projection_stats(nusc, synthetic_root, full_chain=True)


def test_projected_points_land_on_their_class(full_chain_stats):
    visible, agree, count = full_chain_stats
    assert count > 50_000
    assert visible > 0.85  # most points are seen by the camera at their own depth
    assert agree > 0.95, f"class agreement {agree:.4f}"


def test_projection_without_global_round_trip_is_wrong(nusc, synthetic_root, full_chain_stats):
    shifts = []
    for sample in nusc.sample:
        points, _ = _points_and_labels(nusc, synthetic_root, sample["data"]["LIDAR_TOP"])
        for cam in CAMERAS:
            full, naive, k = _chains(nusc, sample, cam)
            uv_full, depth = G.project_points(points, full, k, torch.float64)
            uv_naive, _ = G.project_points(points, naive, k, torch.float64)
            inside = G.inside_mask(uv_full, depth, (126, 224), min_depth=1.0)
            shifts.append((uv_full - uv_naive).norm(dim=-1)[inside].numpy())
    shifts = np.concatenate(shifts)
    assert np.median(shifts) > 1.0 and np.percentile(shifts, 90) > 3.0, np.percentile(shifts, [50, 90])
    visible_full, _, _ = full_chain_stats
    visible_naive, _, _ = _projection_stats(nusc, synthetic_root, full_chain=False)
    assert visible_naive < visible_full - 0.04, (visible_full, visible_naive)


# ----------------------------------------------------------------------------- conditions and pairs
def test_paired_clear_renders(nusc, synthetic_root):
    for sample in nusc.sample:
        adverse = "night" in nusc.get("scene", sample["scene_token"])["description"]
        folder = synthetic_root / "paired_clear" / sample["token"]
        assert folder.is_dir() == adverse
        if not adverse:
            continue
        for cam in CAMERAS:
            clear = np.asarray(Image.open(folder / f"{cam}.jpg"), dtype=np.float32)
            night = np.asarray(Image.open(nusc.get_sample_data_path(sample["data"][cam])), dtype=np.float32)
            assert clear.shape == night.shape
            assert clear.mean() > night.mean() + 30  # daylight vs night


def test_condition_parsing_and_scene_plan():
    from nuscenes.utils import splits

    from data_prep.synthetic.generate import plan_scenes

    assert Condition.parse("Night+Rain") == Condition(night=True, weather="rain")
    assert str(Condition.parse("clear")) == "clear" and not Condition.parse("clear").adverse
    for bad in ("drizzle", "rain+fog", "clear+night", "night+night"):
        with pytest.raises(ConfigError):
            Condition.parse(bad)
    plans = plan_scenes(load_config(REPO / "configs" / "synthetic" / "mini.yaml", schema=SyntheticConfig))
    assert sorted(p.name for p in plans) == sorted(splits.mini_train + splits.mini_val)
    for split in ("train", "val"):
        conds = [p.condition for p in plans if p.split == split]
        assert any(not c.adverse for c in conds) and any(c.adverse for c in conds), split
    assert {p.layout for p in plans} == {"straight", "intersection", "parking"}
    trainval = plan_scenes(SyntheticConfig(version="v1.0-trainval", scenes=20))
    assert {p.split for p in trainval} == {"train", "val"}
    assert all(p.name in (splits.train if p.split == "train" else splits.val) for p in trainval)
    wanted = ["clear", "fog", "night+rain"]
    chosen = plan_scenes(SyntheticConfig(version="v1.0-trainval", scenes=7, val_conditions=wanted))
    assert sorted(str(p.condition) for p in chosen if p.split == "val") == sorted(str(Condition.parse(c))
                                                                                  for c in wanted)
    assert sum(p.split == "train" for p in chosen) == 4
    with pytest.raises(ConfigError, match="val scene names"):
        plan_scenes(SyntheticConfig(scenes=6, val_conditions=["fog", "snow", "rain"]))  # mini has 2 val names


def test_weather_physics_on_a_synthetic_sweep():
    from data_prep.synthetic.config import WeatherConfig
    from data_prep.synthetic.render import LidarScan
    from data_prep.synthetic.weather import atmosphere_for, lidar_returns

    n = 20000
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    scan = LidarScan(dirs=dirs, range=rng.uniform(2, 70, n), ring=rng.integers(0, 32, n),
                     category=np.full(n, 17, np.uint8), instance=np.zeros(n, np.int32),
                     strength=np.full(n, 0.3, np.float32), flat=np.zeros(n, bool))
    kept = {}
    for name in ("clear", "fog", "rain", "snow"):
        atm = atmosphere_for(Condition.parse(name), WeatherConfig(), np.random.default_rng(1))
        out, intensity = lidar_returns(scan, atm, 1.0, np.random.default_rng(2))
        kept[name] = out
        noise = out.category == taxonomy.NOISE
        assert (noise.sum() == 0) == (name == "clear")
        if noise.any():
            assert np.median(out.range[noise]) < 10 and (out.instance[noise] == -1).all()
        assert intensity.shape == out.range.shape and intensity.max() <= 255
    assert len(kept["clear"].range) == n  # 30 % reflective targets within 70 m are all seen in clear air
    far = lambda s: (s.range[s.category != taxonomy.NOISE] > 40).sum()  # noqa: E731
    assert far(kept["fog"]) < 0.2 * far(kept["clear"])  # 60 m visibility: two-way extinction
    assert far(kept["rain"]) < far(kept["clear"])


def test_fog_hides_far_contrast_but_not_near():
    from data_prep.synthetic.config import WeatherConfig
    from data_prep.synthetic.render import GBuffer
    from data_prep.synthetic.shading import Lighting
    from data_prep.synthetic.weather import atmosphere_for, camera_image

    width, height = 64, 32
    n = width * height
    u = np.tile(np.arange(width), height)
    distance = np.where(u < width // 2, 5.0, 150.0).astype(np.float32)  # left near, right far
    gbuf = GBuffer((width, height), depth=distance, tri=np.zeros(n, np.int64), normal=np.zeros((n, 3), np.float32),
                   points=np.zeros((n, 3), np.float32), view=np.zeros((n, 3), np.float32), distance=distance)
    stripes = np.where((u // 2) % 2 == 0, 0.05, 0.8).astype(np.float32).reshape(height, width)
    radiance = np.repeat(stripes[..., None], 3, axis=-1)
    k = np.array([[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]])
    grey = np.full(3, 0.6)
    lighting = Lighting(sun=np.array([0, 0, 1.0]), sun_rgb=grey, ambient_rgb=grey, sky_zenith=grey, sky_horizon=grey)

    def contrast(cond: str) -> tuple[float, float]:
        atm = atmosphere_for(Condition.parse(cond), WeatherConfig(), np.random.default_rng(0))
        img = camera_image(radiance, gbuf, k, atm, lighting, np.random.default_rng(0)).astype(np.float32)
        return img[:, : width // 2].std(), img[:, width // 2:].std()

    clear_near, clear_far = contrast("clear")
    fog_near, fog_far = contrast("fog")
    assert abs(clear_near - clear_far) < 5  # no atmosphere: distance does not matter
    assert fog_far < 0.1 * clear_far and fog_near > 0.5 * clear_near  # Koschmieder: exp(-beta d)


# ----------------------------------------------------------------------------- determinism and CLI
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def make_synthetic():
    """``tools/make_synthetic.py`` loaded as a module: ``run(*argv) -> (exit code, stdout, stderr)``."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location("make_synthetic_tool", REPO / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = tool.main(list(argv))
            except SystemExit as exc:  # argparse
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    return run


def test_same_seed_gives_identical_files(synthetic_root, tmp_path, make_synthetic):
    code, out, err = make_synthetic("--out", str(tmp_path / "again"), "--config",
                                    str(REPO / "configs/synthetic/tiny.yaml"), "--quiet")
    assert code == 0, err
    assert "4 samples, 24 camera images" in out
    first, second = _digest(synthetic_root), _digest(tmp_path / "again")
    # Compare what the generator writes; other test files may add derived files (infos) to the fixture.
    assert len(second) > 60 and {name: first.get(name) for name in second} == second


def test_different_seed_gives_different_world(tmp_path):
    from data_prep.synthetic.generate import generate

    digests = []
    for seed in (0, 1):
        cfg = SyntheticConfig(scenes=1, samples_per_scene=1, image_size=(32, 18), conditions=["clear"], seed=seed)
        generate(cfg, tmp_path / str(seed), progress=False)
        digests.append(_digest(tmp_path / str(seed)))
    lidar = [{k: v for k, v in d.items() if k.startswith("samples/LIDAR_TOP")} for d in digests]
    assert len(lidar[0]) == 1 and set(lidar[0].values()) != set(lidar[1].values())


@pytest.mark.parametrize("args, message", [
    (["--conditions", "clear", "drizzle"], "unknown condition 'drizzle'"),
    (["--image-size", "0", "126"], "image size must be positive"),
    (["--image-size", "224", "-3"], "image size must be positive"),
    (["--image-size", "224"], "argument --image-size: expected 2 arguments"),
    (["--scenes", "11"], "has 10 official scene names"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["weather.fogg=1"], "unknown key 'weather.fogg'"),
])
def test_bad_input_is_one_clear_line(tmp_path, make_synthetic, args, message):
    code, _, err = make_synthetic("--out", str(tmp_path / "out"), *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_in_a_process(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--out", str(tmp_path / "o"),
                           "--image-size", "0", "10"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "image size" in proc.stderr


def test_output_folder_is_never_silently_overwritten(tmp_path, make_synthetic):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = make_synthetic("--out", str(blocker / "sub"))
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    existing = tmp_path / "data"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    for extra, reason in (([], "pass --overwrite"), (["--overwrite"], "not made by this generator")):
        code, _, err = make_synthetic("--out", str(existing), *extra)
        assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err
    assert (existing / "keep.txt").read_text() == "precious"
    (existing / "synthetic_config.yaml").write_text("{}\n")
    check_output_dir(existing, overwrite=True)  # a folder this tool made may be replaced


def test_shipped_synthetic_configs_validate():
    files = sorted((REPO / "configs" / "synthetic").glob("*.yaml"))
    assert {f.name for f in files} >= {"mini.yaml", "tiny.yaml"}
    for path in files:
        validate_config(load_config(path, schema=SyntheticConfig))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["weather.fog=3"], schema=SyntheticConfig)
    assert json.loads(json.dumps(load_config(REPO / "configs/synthetic/tiny.yaml", schema=SyntheticConfig).conditions)) \
        == ["clear", "night+rain"]
