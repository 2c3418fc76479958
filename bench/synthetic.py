#!/usr/bin/env python
"""Benchmark: ray throughput of the synthetic world's renderer (open3d RaycastingScene on the CPU).

For each layout, one seeded scene is frozen at t = 0 and its six cameras and LIDAR_TOP are cast:
  * camera:   one primary ray per pixel (``render_gbuffer``), rays/s;
  * shadow:   one occlusion ray towards the sun per sunlit pixel (``sun_visibility``), rays/s;
  * lidar:    one sweep of 32 x 1084 beams (``scan_lidar``), rays/s;
  * image:    the whole camera pipeline per image (cast, materials, shading, shadows, noise, JPEG), images/s;
  * baseline: the same camera rays against a single ground quad, in the same process, so the
              ``vs_plane`` ratio tells how much the scene's geometry costs independent of the machine.

Rates are given per wall second and per CPU second of the process (all threads): on a machine
shared with other jobs the wall rate drops, the CPU rate much less.

Usage:
  python bench/synthetic.py                     # 448x252, best of 3
  python bench/synthetic.py --image-size 1600 900 --repeats 1
Writes bench/results/synthetic.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from data_prep.synthetic.config import Condition, WeatherConfig
from data_prep.synthetic.layouts import LAYOUTS
from data_prep.synthetic.meshes import MeshBuilder, pose2d, quad
from data_prep.synthetic.render import RayCaster, render_gbuffer, scan_lidar
from data_prep.synthetic.scene import build_scene
from data_prep.synthetic.sensors import CAMERAS, LIDAR, camera_rays
from data_prep.synthetic.shading import shade, sun_visibility, surfaces
from data_prep.synthetic.weather import atmosphere_for, camera_image, lighting_for

REPO = Path(__file__).resolve().parents[1]


def _best(fn: Callable[[], int], repeats: int) -> tuple[float, float, int]:
    """Best wall time and best process CPU time (all threads) of ``repeats`` calls after a warm-up,
    and the count ``fn`` returns. CPU time is the robust number on a machine shared with other jobs."""
    count = fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, count


def run(size: tuple[int, int], repeats: int) -> dict:
    plane = MeshBuilder()
    plane.add(quad(1000, 1000), pose2d(0, 0, 0), 24, 0, (0.1, 0.1, 0.1))
    plane_caster = RayCaster(plane.build())
    rig = [(c.cam2ego(), c.intrinsics(size), camera_rays(c.intrinsics(size), size)) for c in CAMERAS]
    results = {}
    for layout in LAYOUTS:
        scene = build_scene(Condition(), layout, "boston-seaport", 10, np.random.default_rng(0))
        atm = atmosphere_for(Condition(), WeatherConfig(), np.random.default_rng(1))
        lighting = lighting_for(atm, scene)
        mesh = scene.mesh_at(0.0)
        caster = RayCaster(mesh)
        ego = scene.ego.matrix(0.0)
        poses = [ego @ cam2ego for cam2ego, _, _ in rig]

        def cameras(target: RayCaster = caster) -> int:
            return sum(render_gbuffer(target, pose, rays, size).tri.size for pose, (_, _, rays) in zip(poses, rig))

        gbufs = [render_gbuffer(caster, pose, rays, size) for pose, (_, _, rays) in zip(poses, rig)]

        def shadows() -> int:
            for g in gbufs:
                sun_visibility(g, caster, scene.sun)
            return int(sum((g.hit & (g.normal @ scene.sun.astype(np.float32) > 0)).sum() for g in gbufs))

        def lidar() -> int:
            return scan_lidar(caster, ego @ LIDAR.lidar2ego(), LIDAR, np.random.default_rng(0)).range.size

        def images() -> int:
            rng = np.random.default_rng(0)
            for pose, (_, k, rays) in zip(poses, rig):
                g = render_gbuffer(caster, pose, rays, size)
                rgb = camera_image(shade(g, surfaces(g, mesh), lighting, sun_visibility(g, caster, scene.sun), ego),
                                   g, k, atm, lighting, rng)
                Image.fromarray(rgb).save(io.BytesIO(), format="JPEG", quality=90)
            return len(poses)

        row = {"triangles": mesh.num_triangles}
        for name, fn, unit in (("camera", cameras, "rays"), ("shadow", shadows, "rays"), ("lidar", lidar, "rays"),
                               ("image", images, "images"), ("plane", lambda: cameras(plane_caster), "rays")):
            seconds, cpu, count = _best(fn, repeats)
            row[name] = {"seconds": seconds, "cpu_seconds": cpu, unit: count, f"{unit}_per_s": count / seconds,
                         f"{unit}_per_cpu_s": count / cpu}
        row["camera"]["vs_plane"] = row["camera"]["rays_per_s"] / row["plane"]["rays_per_s"]
        results[layout] = row
    return {"image_size": list(size), "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
            "repeats": repeats, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs=2, default=(448, 252), metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is kept")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synthetic.json")
    args = parser.parse_args()
    report = run(tuple(args.image_size), args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.image_size[0]}x{args.image_size[1]} images, {report['cpus']} CPUs, best of {args.repeats}, "
          f"load average {report['load_average'][0]:.1f} (per wall second / per CPU second)\n")
    print("| layout | triangles | camera rays/s | vs plane | shadow rays/s | LiDAR rays/s | images/s (full pipeline) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for layout, r in report["results"].items():
        cells = [f"{r[k]['rays_per_s'] / 1e6:.2f} M / {r[k]['rays_per_cpu_s'] / 1e6:.2f} M" for k in ("camera",)]
        cells += [f"{r['camera']['vs_plane']:.2f}"]
        cells += [f"{r[k]['rays_per_s'] / 1e6:.2f} M / {r[k]['rays_per_cpu_s'] / 1e6:.2f} M" for k in ("shadow", "lidar")]
        cells += [f"{r['image']['images_per_s']:.1f} / {r['image']['images_per_cpu_s']:.1f}"]
        print(f"| {layout} | {r['triangles']:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
