#!/usr/bin/env python
"""Benchmark: does a CPU stage-1 step stall when other jobs share the cores? (target: <= 2.5x idle)

One command, about 2 minutes on 2 idle cores. It generates the tiny synthetic world (configs/
synthetic/tiny.yaml) in a temporary folder, then runs each configuration in its own child process
(OpenMP reads its settings when torch loads, so they must be in place before ``import torch``), each
from an environment without any ``OMP_*``/``GOMP_*``/``MKL_*``/``KMP_*`` variable:

* ``old default``: nothing set (torch's thread count, one per physical core; libgomp's spinning
  wait), started on the idle machine: what the tools did before.
* ``new default``: the child calls :func:`collab_distill.threads.set_thread_defaults` before importing
  torch, as every tool does, on the idle machine (so all cores, short spinning); the load arrives later.
* ``new default, started under load``: the same, started while the load runs (the issue's case: a
  job started next to another one), so the defaults leave the busy cores out.

Each child builds the stage-1 step of ``bench/train_step.py`` (live teacher, all six cameras as in
the main job) and warms it up, then times phases that alternate between idle and loaded,
``--rounds`` of each (a busy spell of a shared machine then hits both). In a loaded phase
``--load-procs`` busy-loop processes run next to it (default: one per CPU this process may use), in
a session of their own like a job started from another terminal. A phase times ``--steps`` steps,
or fewer once ``--phase-seconds`` have passed (a stalled step can take a minute). The busy loops end
by themselves after a fixed time and are killed when their phase ends, also on an error or Ctrl-C.

The target: the loaded step of ``new default, started under load`` over the idle step of ``new
default`` (the step's idle time with the new defaults) <= 2.5. Also reported: each configuration's
loaded/idle, every median against the old default's idle step (the new defaults must not make an
idle machine slower), the CPU model, the 1-minute load average before the run (above ~0.5, other
jobs were running and the "idle" steps were not idle) and after each phase, every step time.

  python bench/stall.py                       # writes bench/results/stall.json and stall.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Callable, Sequence

from train_step import REPO, build_step

from collab_distill.threads import physical_cores, set_thread_defaults

TARGET = 2.5
STEP_OVERRIDES = ["method.name=stage1", "method.teacher_store=''", "data.cameras=[all]"]
# Variables that change OpenMP/MKL threading: none reaches a child.
THREADING_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_")
IDLE, LOADED = "idle", "loaded"  # a child prints one before each phase and waits for the parent's answer
# name: (whether the child calls set_thread_defaults() before importing torch, the phase it starts in)
CONFIGS = {"old default": (False, IDLE), "new default": (True, IDLE),
           "new default, started under load": (True, LOADED)}
OLD, NEW, NEW_LOADED = CONFIGS
# A busy loop that stops by itself after argv[1] seconds, should the benchmark die without killing it.
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` reports it (its source, /proc/cpuinfo), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_steps(step: Callable[[dict], list[float]], batches: list[dict], count: int, budget_s: float) -> list[float]:
    """Seconds of up to ``count`` steps cycling over ``batches``, stopping once ``budget_s`` have passed
    (at least one step)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < count and (not times or time.perf_counter() - start < budget_s):
        times.append(sum(step(batches[len(times) % len(batches)])))
    return times


def parallel_backend(torch: ModuleType) -> str:
    """torch's CPU parallel backend as it reports it ("OpenMP" for the x86 wheels: libgomp)."""
    lines = torch.__config__.parallel_info().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("ATen parallel backend")), "?")


def child(args: argparse.Namespace) -> None:
    """One configuration: ``--rounds`` pairs of phases, each announced to the parent (which starts or
    stops the load) before it runs; prints one JSON line."""
    if "torch" in sys.modules:  # OpenMP would have read its settings already: the numbers would be void
        raise RuntimeError("torch was imported before the child set its threading environment")
    defaults, first = CONFIGS[args.config]
    if defaults:
        set_thread_defaults()
    import torch

    step, batches, _, _ = build_step(args.info_dir, STEP_OVERRIDES, 1, args.batch_size, "cpu")
    step(batches[0])  # warm-up: spconv's algorithm choice
    times: dict[str, list[float]] = {IDLE: [], LOADED: []}
    order = (first, LOADED if first == IDLE else IDLE)
    for _ in range(args.rounds):
        for phase in order:
            print(phase, flush=True)
            sys.stdin.readline()
            times[phase] += timed_steps(step, batches, args.steps, args.phase_seconds)
    env = {k: v for k, v in os.environ.items() if k.startswith(THREADING_PREFIXES)}
    print(json.dumps({"idle_s": times[IDLE], "loaded_s": times[LOADED], "threads": torch.get_num_threads(),
                      "env": env, "torch": torch.__version__, "parallel_backend": parallel_backend(torch)}),
          flush=True)


def start_load(procs: int, seconds: float) -> list[subprocess.Popen]:
    """``procs`` busy-loop processes that stop by themselves after ``seconds``. They run in a session of
    their own, like a job started from another terminal: with the kernel's autogroup scheduling each
    session shares the CPUs as one group, and loops in the benchmark's session would take their share
    from the measured child alone."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)], start_new_session=True)
            for _ in range(procs)]


def stop(procs: Sequence[subprocess.Popen]) -> None:
    """Kill ``procs`` (those still running) and reap them."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def read_line(proc: subprocess.Popen, name: str, stderr: IO[str]) -> str:
    """The child's next stdout line; a child that ended instead is an error showing its stderr."""
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        stderr.seek(0)
        raise RuntimeError(f"{name}: the child exited with {proc.returncode}:\n{stderr.read()[-3000:]}")
    return line.strip()


def run_config(name: str, info_dir: Path, args: argparse.Namespace) -> dict:
    """Run configuration ``name`` in a child with a clean threading environment, with the load running
    during its loaded phases (and at its start if it starts loaded); its numbers and the 1-minute load
    average after each phase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREADING_PREFIXES)}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, __file__, "--child", name, "--info-dir", str(info_dir), "--steps", str(args.steps),
           "--rounds", str(args.rounds), "--batch-size", str(args.batch_size),
           "--phase-seconds", str(args.phase_seconds)]
    # the loops outlive a child's start and a normal loaded phase, but not a forgotten benchmark
    lifetime = 4 * args.phase_seconds + 120
    load = start_load(args.load_procs, lifetime) if CONFIGS[name][1] == LOADED else []
    after: list[list] = []  # [phase, 1-minute load average at its end]
    # stderr to a file: a chatty child must not block on a full pipe while the parent waits on stdout
    stderr = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env=env, cwd=REPO)
    try:
        phase = None
        while (line := read_line(proc, name, stderr)) in (IDLE, LOADED):
            if phase:
                after.append([phase, os.getloadavg()[0]])
            phase = line
            if phase == IDLE:
                stop(load)
                load = []
            elif not load:
                load = start_load(args.load_procs, lifetime)
            proc.stdin.write("go\n")
            proc.stdin.flush()
        after.append([phase, os.getloadavg()[0]])
        result = json.loads(line)
    finally:
        stop(load)
        stop([proc])
        stderr.close()
    return {**result, "load_1min_after": after}


def summarise(runs: dict[str, dict]) -> dict[str, dict]:
    """Per configuration: median idle and loaded step, loaded/idle, both medians against the old
    default's idle one."""
    out = {}
    for name, r in runs.items():
        idle, loaded = statistics.median(r["idle_s"]), statistics.median(r["loaded_s"])
        out[name] = {**r, "idle_median_s": idle, "loaded_median_s": loaded, "loaded_over_idle": loaded / idle}
    base = out[OLD]["idle_median_s"]
    for r in out.values():
        r["idle_vs_old_default"] = r["idle_median_s"] / base
        r["loaded_vs_old_default_idle"] = r["loaded_median_s"] / base
    return out


def markdown(report: dict) -> str:
    """The Markdown table, its header line and the target's verdict."""
    results = report["results"]
    lines = [f"CPU {report['cpu']}, {report['cpus']} CPUs usable ({report['physical_cores']} physical cores), "
             f"load average before the run {report['load_before']:.2f}; stage-1 step (live teacher, all cameras), "
             f"batch {report['batch_size']}; load: {report['load_procs']} busy-loop processes", "",
             "| configuration | threads | idle step (median) | loaded step (median) | loaded / idle | "
             "idle vs old default idle | loaded vs old default idle | load avg after idle phases | "
             "after loaded phases |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, r in results.items():
        after = {p: ", ".join(f"{v:.1f}" for q, v in r["load_1min_after"] if q == p) for p in (IDLE, LOADED)}
        lines.append(f"| {name} | {r['threads']} | {r['idle_median_s']:.2f} s | {r['loaded_median_s']:.2f} s | "
                     f"{r['loaded_over_idle']:.2f}x | {r['idle_vs_old_default']:.2f}x | "
                     f"{r['loaded_vs_old_default_idle']:.2f}x | {after[IDLE]} | {after[LOADED]} |")
    if "target" in report:
        t = report["target"]
        lines += ["", f"Target: a stage-1 step started under the load <= {TARGET}x its idle time with the new "
                      f"defaults: {t['ratio']:.2f}x, {'met' if t['met'] else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_world(root: Path) -> Path:
    """Generate and prepare the tiny synthetic world under ``root``; returns its info folder."""
    from collab_distill.config import load_config
    from data_prep.nuscenes_infos import prepare
    from data_prep.synthetic.config import SyntheticConfig
    from data_prep.synthetic.generate import generate

    world = load_config(REPO / "configs" / "synthetic" / "tiny.yaml", schema=SyntheticConfig)
    generate(world, root, progress=False)
    prepare(root, world.version, root / "infos", workers=1, progress=False)
    return root / "infos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase (at most, see --phase-seconds)")
    parser.add_argument("--rounds", type=int, default=2, help="idle and loaded phases per configuration")
    parser.add_argument("--phase-seconds", type=float, default=20.0,
                        help="end a phase after this long, even before --steps (a stalled step can take 20-60 s)")
    parser.add_argument("--load-procs", type=int, default=len(os.sched_getaffinity(0)),
                        help="busy-loop processes during a loaded phase (default: one per usable CPU)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help=f"'{OLD}' is always run: every ratio is against it")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stall.json",
                        help="JSON output; the Markdown table goes next to it (.md)")
    parser.add_argument("--child", choices=list(CONFIGS), dest="config", help=argparse.SUPPRESS)
    parser.add_argument("--info-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config:
        child(args)
        return
    names = [OLD, *(n for n in args.configs if n != OLD)]
    # `kill` then unwinds like Ctrl-C, through the `finally` that kills the busy loops and the child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        info_dir = make_world(Path(tmp) / "world")
        runs = {}
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            runs[name] = run_config(name, info_dir, args)
    results = summarise(runs)
    report = {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)),
              "physical_cores": physical_cores(os.sched_getaffinity(0)), "load_before": load_before,
              "load_procs": args.load_procs, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
              "phase_seconds": args.phase_seconds, "python": platform.python_version(),
              "seconds": time.perf_counter() - start, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}
    if NEW in results and NEW_LOADED in results:
        ratio = results[NEW_LOADED]["loaded_median_s"] / results[NEW]["idle_median_s"]
        report["target"] = {"ratio": ratio, "limit": TARGET, "met": ratio <= TARGET}
    table = markdown(report)
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    write_atomic(args.out.with_suffix(".md"), table)
    print(table)
    for name, r in results.items():
        print(f"  {name}: idle " + ", ".join(f"{t:.2f}" for t in r["idle_s"])
              + " s; loaded " + ", ".join(f"{t:.2f}" for t in r["loaded_s"]) + " s")
    print(f"\n{report['seconds']:.0f} s in all; wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
