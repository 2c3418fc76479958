"""Info store: the records (read row by row with pread) equal the JSON export exactly, select like InfoFile.filter,
refuse a damaged store in one line, and cost O(1) memory and pickle size per process."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tracemalloc
from multiprocessing.reduction import ForkingPickler  # how DataLoader sends a dataset to spawn workers
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collab_distill.config import DataConfig
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.info_store import META_FILE, InfoSelection, InfoStore, store_path, write_info_store
from collab_distill.data.infos import InfoFileError, load_infos

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _scale_data import TAG_CYCLE, tile_infos  # noqa: E402  (one definition, shared with bench/scale.py)


def assert_same_sample(got: Any, want: Any, name: str = "sample") -> None:
    """Every field equal, recursively (cameras, sweeps); matrices bit-exact float64."""
    if isinstance(want, np.ndarray):
        assert got.dtype == np.float64 and np.array_equal(got, want), name
    elif dataclasses.is_dataclass(want):
        assert type(got) is type(want), name
        for field in dataclasses.fields(want):
            assert_same_sample(getattr(got, field.name), getattr(want, field.name), f"{name}.{field.name}")
    elif isinstance(want, dict):
        assert type(got) is dict and got.keys() == want.keys(), name
        for key in want:
            assert_same_sample(got[key], want[key], f"{name}[{key}]")
    elif isinstance(want, tuple):
        assert type(got) is tuple and len(got) == len(want), (name, got, want)
        for k, (x, y) in enumerate(zip(got, want)):
            assert_same_sample(x, y, f"{name}[{k}]")
    else:
        assert type(got) is type(want) and got == want, (name, got, want)


def _write_json_and_store(folder: Path, info: dict[str, Any]) -> InfoStore:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"infos_{info['split']}.json").write_text(json.dumps(info))
    write_info_store(store_path(folder, info["split"]), info)
    return InfoStore(store_path(folder, info["split"]))


@pytest.mark.parametrize("split", ["train", "val"])
def test_prepared_store_equals_the_json_field_by_field(synthetic_infos, textured_infos_dir, split):
    for folder in (synthetic_infos, textured_infos_dir):
        infos, store = load_infos(folder / f"infos_{split}.json"), InfoStore(store_path(folder, split))
        assert (store.nuscenes_version, store.devkit_version, store.split, store.dataroot) == \
               (infos.nuscenes_version, infos.devkit_version, infos.split, infos.dataroot)
        assert len(store) == len(infos.samples)
        for i, want in enumerate(infos.samples):
            assert_same_sample(store.sample(i), want)
    assert len(InfoStore(store_path(synthetic_infos, "val"))) > 0 and len(InfoStore(store_path(textured_infos_dir,
                                                                                                "val"))) == 0


def test_odd_records_round_trip(textured_infos_dir, tmp_path):
    """Absent cameras, a channel outside CAMERA_ORDER, non-ASCII strings, a lidarseg path, two condition tags
    (in CONDITION_TAGS order, not alphabetical), a dataroot override."""
    info = json.loads((textured_infos_dir / "infos_train.json").read_text())
    first, second = info["samples"][0], info["samples"][1]
    first["cameras"]["CAM_ZOOM_ü"] = first["cameras"].pop("CAM_FRONT")
    del second["cameras"]["CAM_BACK"], second["cameras"]["CAM_FRONT_LEFT"]
    first["token"], second["scene_name"] = "tök/../ên", "scène-été"
    second["lidar"]["lidarseg_path"] = "lidarseg/v1.0-mini/x_lidarseg.bin"
    second["conditions"] = ["night", "fog"]
    assert len(second["lidar"]["sweeps"]) == 1 and not first["lidar"]["sweeps"]
    second["lidar"]["sweeps"] *= 3                                    # sweep slots of another length
    second["lidar"]["sweeps"][1] = {**second["lidar"]["sweeps"][1], "path": "sweeps/LIDAR_TOP/été.pcd.bin"}
    store = _write_json_and_store(tmp_path, info)
    infos = load_infos(tmp_path / "infos_train.json")
    assert store.cameras[-1] == "CAM_ZOOM_ü" and len(store.cameras) == 7 and store.sweeps == 3
    assert store.sample(1).sweeps[1].path == "sweeps/LIDAR_TOP/été.pcd.bin" and store.sample(0).sweeps == ()
    for i, want in enumerate(infos.samples):
        assert_same_sample(store.sample(i), want)
    present = store.cameras_present([1, 0])  # the slots a store row of each sample has (feature_store.image_rows)
    assert [[c for c, has in zip(store.cameras, row) if has] for row in present.tolist()] == \
        [[c for c in store.cameras if c in store.sample(i).cameras] for i in (1, 0)]
    assert not present[0, store.cameras.index("CAM_BACK")] and present[1, store.cameras.index("CAM_ZOOM_ü")]
    assert InfoStore(store.path, dataroot=tmp_path).dataroot == tmp_path
    with pytest.raises(IndexError):
        store.sample(len(store))


def test_select_equals_info_file_filter(textured_infos_dir, tmp_path):
    info = tile_infos(json.loads((textured_infos_dir / "infos_train.json").read_text()), 50)
    store = _write_json_and_store(tmp_path, info)
    infos = load_infos(tmp_path / "infos_train.json")
    for conditions in (None, ["all"], ["clear"], ["night"], ["rain", "fog"], ["snow", "clear"], ["unknown"], []):
        chosen = store.select(conditions)
        assert chosen.dtype == np.int64
        assert [store.sample(i).token for i in chosen] == [s.token for s in infos.filter(conditions)], conditions
    assert store.present_conditions() == ("clear", "night", "rain", "fog", "snow")
    selection = InfoSelection(store, ["night"])
    assert [s.token for s in selection] == [s.token for s in infos.filter(["night"])]
    assert selection[-1].token == infos.filter(["night"])[-1].token


def test_unknown_condition_tag_is_refused_at_write(textured_infos_dir, tmp_path):
    info = json.loads((textured_infos_dir / "infos_train.json").read_text())
    info["samples"][2]["conditions"] = ["clear", "hail"]
    with pytest.raises(ValueError, match=r"record \w+: condition tags \['hail'\]"):
        write_info_store(tmp_path / "infos_train", info)
    assert not list(tmp_path.iterdir())  # nothing half-written is left in place


def _truncate(store: Path) -> Path:
    path = store / "camera_lidar2cam.npy"
    os.truncate(path, path.stat().st_size - 8)
    return path


def _drop_meta(store: Path) -> Path:
    (store / META_FILE).unlink()
    return store / META_FILE


def _drop_array(store: Path) -> Path:
    (store / "strings.npy").unlink()
    return store / "strings.npy"


def _old_version(store: Path) -> Path:
    meta = json.loads((store / META_FILE).read_text())
    (store / META_FILE).write_text(json.dumps({**meta, "store_version": 0}))
    return store / META_FILE


def _other_shape(store: Path) -> Path:
    np.save(store / "num_points.npy", np.zeros(3, np.int32))
    return store / "num_points.npy"


@pytest.mark.parametrize("damage, what", [(_truncate, "bytes"), (_drop_meta, "not found or not completely written"),
                                          (_drop_array, "missing"), (_old_version, "store version"),
                                          (_other_shape, "bytes")])
def test_a_damaged_store_is_one_line_naming_the_file(textured_infos_dir, tmp_path, damage, what):
    info = json.loads((textured_infos_dir / "infos_train.json").read_text())
    write_info_store(tmp_path / "infos_train", info)
    path = damage(tmp_path / "infos_train")
    with pytest.raises(InfoFileError) as caught:
        PairedDataset(DataConfig(info_dir=str(tmp_path), split="train"))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and what in message and "\n" not in message
    assert message.endswith("run tools/prepare_nuscenes.py again with --overwrite")


def test_rewrite_replaces_atomically(textured_infos_dir, tmp_path):
    info = json.loads((textured_infos_dir / "infos_train.json").read_text())
    write_info_store(tmp_path / "infos_train", tile_infos(info, 9))
    old = InfoStore(tmp_path / "infos_train")
    write_info_store(tmp_path / "infos_train", info)
    assert len(InfoStore(tmp_path / "infos_train")) == len(info["samples"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["infos_train"]  # no temporary folder left
    assert old.sample(8).token.endswith("-000008")  # a process that had it open keeps its mapping


@pytest.fixture(scope="module")
def big_store(textured_infos_dir, tmp_path_factory) -> tuple[Path, int]:
    """A folder with ``infos_train/`` of 20,000 tiled records (paths to the textured fixture's files)."""
    folder, n = tmp_path_factory.mktemp("big_store"), 20_000
    write_info_store(store_path(folder, "train"), tile_infos(json.loads((textured_infos_dir / "infos_train.json")
                                                                          .read_text()), n))
    return folder, n


def test_memory_and_pickle_size_do_not_grow_with_the_sample_count(textured_infos_dir, big_store):
    folder, n = big_store
    tracemalloc.start()
    try:
        big = PairedDataset(DataConfig(info_dir=str(folder), split="train", conditions=["night"], cameras=["all"],
                                       image_size=(126, 252)), train=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"{peak} bytes to open {n} records"
    assert len(big) == sum(1 for k in range(n) if "night" in TAG_CYCLE[k % len(TAG_CYCLE)])
    small = PairedDataset(DataConfig(info_dir=str(textured_infos_dir), split="train", cameras=["all"],
                                     image_size=(126, 252)), train=False)
    big_size, small_size = len(ForkingPickler.dumps(big)), len(ForkingPickler.dumps(small))
    assert small_size < 50_000 and abs(big_size - small_size) < 200, (small_size, big_size)
    copy = ForkingPickler.loads(ForkingPickler.dumps(big))  # what a DataLoader worker started with spawn receives
    assert np.array_equal(copy.samples.indices, big.samples.indices)
    assert_same_sample(copy.samples[len(big) - 1], big.samples[len(big) - 1])
    assert big.samples[len(big) - 1].token.endswith(f"-{big.samples.indices[-1]:06d}")
    item, again = big[len(big) - 1], copy[len(big) - 1]
    assert item["token"] == again["token"] and np.array_equal(item["points"], again["points"])


def _mapped_lines(folder: Path) -> list[str]:
    """The lines of ``/proc/self/maps`` that map a file under ``folder``."""
    prefix = f"{Path(folder).resolve()}/"
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if prefix in line]


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc/self/maps (Linux)")
def test_reading_every_sample_maps_no_file_of_the_store(big_store):
    folder, n = big_store
    store = InfoStore(store_path(folder, "train"))
    tokens = {store.sample(i).token for i in range(n)}
    assert len(tokens) == n
    assert len(store.select(["night"])) and store.present_conditions()
    assert _mapped_lines(folder) == []  # rows are read with pread: the pages stay in the page cache only
    copy = ForkingPickler.loads(ForkingPickler.dumps(store))
    assert copy.sample(n - 1).token == store.sample(n - 1).token and _mapped_lines(folder) == []
    store.close()
    assert store.sample(3).token == copy.sample(3).token  # reading after close opens the files again


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_row_file_round_trips_npy_rows_bit_for_bit(tmp_path, version):
    from collab_distill.data.rows import RowFile

    rng = np.random.default_rng(0)
    arrays = {"f64": rng.standard_normal((7, 4, 4)), "i32": rng.integers(-9, 9, (5, 3, 2), dtype=np.int32),
              "u8": rng.integers(0, 255, 11, dtype=np.uint8), "bool": rng.random((6, 3)) > 0.5,
              "empty": np.zeros((0, 3), np.float32), "no_columns": np.zeros((4, 0, 4), np.float64),
              "big_endian": np.arange(6, dtype=">i8").reshape(3, 2)}
    arrays["f64"][0, 0, 0], arrays["f64"][0, 0, 1] = np.nan, -0.0
    for name, array in arrays.items():
        path = tmp_path / f"{name}.npy"
        with open(path, "wb") as f:
            np.lib.format.write_array(f, array, version=version, allow_pickle=False)
        rows = RowFile.npy(path)
        assert rows.shape == array.shape and rows.dtype == array.dtype and rows.end == path.stat().st_size, name
        assert rows.all().tobytes() == array.tobytes(), name
        for i in range(len(array)):
            assert rows.row(i).tobytes() == array[i].tobytes(), (name, i)
        order = list(range(len(array)))[::-1]
        assert rows.take(order).tobytes() == array[order].tobytes(), name
        if len(array) >= 3:
            assert rows.read(1, 3).tobytes() == array[1:3].tobytes(), name
        with pytest.raises(IndexError):
            rows.row(len(array))
        copy = ForkingPickler.loads(ForkingPickler.dumps(rows))  # by path, opened again
        assert copy.all().tobytes() == array.tobytes(), name
        rows.close()
        rows.close()
        assert rows.all().tobytes() == array.tobytes(), name  # reopened
    raw = tmp_path / "raw.f16"
    raw.write_bytes(rng.standard_normal((4, 2, 3)).astype(np.float16).tobytes())
    rows = RowFile(raw, np.float16, (2, 3))  # a raw file: offset 0, rows from its size
    assert rows.rows == 4 and rows.all().tobytes() == raw.read_bytes()
    raw.write_bytes(raw.read_bytes()[:-1])  # cut short
    with pytest.raises(EOFError, match="cut short"):
        rows.row(3)
    with pytest.raises(ValueError, match="Fortran"):
        np.save(tmp_path / "fortran.npy", np.asfortranarray(np.ones((2, 3))))
        RowFile.npy(tmp_path / "fortran.npy")
