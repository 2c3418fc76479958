"""The sharded row store (collab_distill/data/shards.py): fixed and ragged fields, resume, damage."""
from __future__ import annotations

from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest

from collab_distill.data.shards import (
    Field,
    ShardReader,
    ShardWriter,
    StoreError,
    begin_build,
    finish_build,
    partial_path,
)

FIELDS = (Field("x", "float16", (2, 3)), Field("pix", "int32", (), ragged=True),
          Field("val", "float32", (2,), ragged=True))


def _rows(count: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 2, 3)).astype(np.float16)
    lengths = rng.integers(0, 6, count)
    lengths[1] = 0  # an empty row
    pix = [rng.integers(0, 1000, n).astype(np.int32) for n in lengths]
    val = [rng.standard_normal((n, 2)).astype(np.float32) for n in lengths]
    return x, pix, val


def _build(tmp_path, count: int, processes: int, kill_after: dict[int, int] | None = None):
    x, pix, val = _rows(count)
    folder, final = partial_path(tmp_path / "st"), tmp_path / "st"
    if not folder.exists():
        begin_build(folder, {"rows": count, "processes": processes})
    for rank in range(processes):
        writer = ShardWriter(folder, rank, processes, count, FIELDS)
        mine = list(range(rank, count, processes))[writer.done:]
        for i in mine:
            writer.write(x=x[i:i + 1], pix=[pix[i]], val=[val[i]])
            if kill_after and kill_after.get(rank) == writer.done:
                writer.write(x=x[:1], pix=[pix[0]], val=[val[0]])  # written, never committed: dropped on resume
                writer.close()
                break
            writer.commit()
        else:
            writer.close()
    if kill_after:
        return None, (x, pix, val)
    finish_build(folder, final)
    return final, (x, pix, val)


@pytest.mark.parametrize("processes", [1, 3])
def test_fixed_and_ragged_rows_round_trip(tmp_path, processes):
    final, (x, pix, val) = _build(tmp_path, 8, processes)
    reader = ForkingPickler.loads(ForkingPickler.dumps(ShardReader(final, 8, processes, FIELDS)))
    assert reader.size_problem() is None
    order = [5, 0, 1, 7, 1]
    assert reader.read("x", order).tobytes() == x[order].tobytes()
    for got, i in zip(reader.read("pix", order), order):
        assert np.array_equal(got, pix[i]) and got.dtype == np.int32
    for got, i in zip(reader.read("val", order), order):
        assert got.shape == (len(pix[i]), 2) and np.array_equal(got, val[i])
    with pytest.raises(StoreError, match="row 8 of a store of 8 rows"):
        reader.read("x", [8])


def test_a_killed_build_resumes_to_the_same_store(tmp_path):
    straight, _ = _build(tmp_path / "a", 9, 2)
    (tmp_path / "b").mkdir()
    _build(tmp_path / "b", 9, 2, kill_after={0: 2, 1: 1})
    assert not (tmp_path / "b" / "st").exists()
    with pytest.raises(StoreError, match="shard 0 has 1 of 5 rows"):
        finish_build(partial_path(tmp_path / "b" / "st"), tmp_path / "b" / "st")
    resumed, _ = _build(tmp_path / "b", 9, 2)
    for file in sorted(p.name for p in straight.iterdir()):
        assert (straight / file).read_bytes() == (resumed / file).read_bytes(), file


def test_a_cut_short_ragged_file_is_named(tmp_path):
    final, _ = _build(tmp_path, 8, 2)
    values = FIELDS[2].file(final, 1)
    values.write_bytes(values.read_bytes()[:-4])
    problem = ShardReader(final, 8, 2, FIELDS).size_problem()
    assert problem is not None and problem.startswith(f"{values}:") and "expected" in problem
