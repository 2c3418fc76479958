"""Info records at any scale from a small pool of real ones, shared by ``bench/scale.py`` and
``tests/test_info_store.py`` (imported as ``from _scale_data import tile_infos`` with bench/ on ``sys.path``)."""
from __future__ import annotations

from typing import Any

TAG_CYCLE = (["clear"], ["night"], ["rain"], ["night", "rain"], ["fog"], ["snow"], ["night", "fog"])


def tile_infos(info: dict[str, Any], n: int) -> dict[str, Any]:
    """An info-file dict of ``n`` records in the real schema: ``info``'s records repeated (so every path
    names a real file), each with its own token and scene, and condition tags cycling over TAG_CYCLE."""
    records = info["samples"]
    tiled = [{**records[k % len(records)], "token": f"{records[k % len(records)]['token']}-{k:06d}",
              "scene_name": f"scene-{k // 40:04d}", "conditions": TAG_CYCLE[k % len(TAG_CYCLE)]} for k in range(n)]
    return {**info, "samples": tiled}
