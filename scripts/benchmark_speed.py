"""Speed benchmark: the whole ``pbrfit fit`` process, as a user runs it, timed phase by phase
and judged by real Cycles.

For each case (a finish of :mod:`benchmark_fit` on a shape; 160 px, 4 train views under one
HDRI, 6 validation views under three others, references rendered by Cycles and cached):

1. ``pbrfit fit JOB --preset P --out DIR --progress json`` runs in a fresh process, ``--repeat``
   times. Wall time is measured outside the process (start-up included), peak RSS from the
   child's rusage; the phases (reading the job, setup, each raster stage, path refinement,
   final metrics) come from material.json (``provenance.timings_s``), start-up and writing
   are what is left.
2. The fitted material is rendered by real Cycles on the validation views (another seed) and
   compared with the references: ΔE2000 mean over pixels inside both masks (the judge of
   :func:`benchmark_fit._cycles_judge`); ``truth`` is the true material through the same judge,
   Cycles' own noise floor.

``--no-preset`` runs the default command as a user types it (``pbrfit fit JOB``: every
parameter, layer discovery included) and adds a table of the layers each result has on, next
to the truth's: with ``--config b60=--time-budget 60`` and the like, what a budget buys.

``--config NAME=ARGS`` runs the same cases under other command-line options, and
``--config NAME@PATH=ARGS`` with another checkout's ``core/`` first on ``PYTHONPATH`` (a
worktree of an older commit: "today" side by side).

Usage::

    python scripts/benchmark_speed.py --out /tmp/speed --cases rough_plastic,gold,coated_paint \\
        --shapes sphere,suzanne [--config old@/tmp/old=] [--repeat 3]

Writes ``OUT/speed.json`` and ``OUT/speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchmark_fit as B
from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parent.parent

#: phases in material.json's provenance.timings_s, in order
PHASES = ("before setup", "setup", "colour", "gloss", "layers", "all", "refine", "path", "final metrics")


def _parse_config(text: str) -> dict:
    """``NAME=ARGS`` or ``NAME@CHECKOUT=ARGS``."""
    head, _, rest = text.partition("=")
    name, _, checkout = head.partition("@")
    return {"name": name, "checkout": checkout or None, "args": shlex.split(rest)}


def _communicate_with_rusage(proc: subprocess.Popen) -> tuple[str, str, float | None]:
    """stdout, stderr and the child's own peak RSS in MiB (``os.wait4``; None where the
    platform has no wait4)."""
    import threading

    chunks = {"out": "", "err": ""}

    def drain(name, stream):
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=("out", proc.stdout)),
               threading.Thread(target=drain, args=("err", proc.stderr))]
    for t in readers:
        t.start()
    peak = None
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)
    else:
        proc.wait()
    for t in readers:
        t.join()
    return chunks["out"], chunks["err"], peak


def run_process(job: Path, preset: str | None, config: dict) -> dict:
    """One ``pbrfit fit`` in a fresh Python process: wall time, peak RSS, material.json."""
    env = dict(os.environ)
    if config["checkout"]:
        env["PYTHONPATH"] = str(Path(config["checkout"]) / "core") + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="pbrfit-speed-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pbrfit.cli", "fit", str(job), *(["--preset", preset] if preset else []),
               "--out", str(out), "--progress", "json", *config["args"]]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr, peak_mib = _communicate_with_rusage(proc)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"pbrfit fit exited {proc.returncode}: {stderr.strip().splitlines()[-1:]} {stdout[-300:]}")
        doc = json.loads((out / "material.json").read_text())
    timings = doc["provenance"].get("timings_s", {})
    inside = doc["provenance"]["wall_time_s"]
    return {"wall_s": wall, "peak_rss_mib": peak_mib, "timings": timings,
            "start_up_and_writing_s": wall - sum(timings.values()) if timings else wall - inside,
            "material": doc["parameters"], "fitted": doc["fitted"], "stopped": doc["stopped"],
            "notes": [f["message"] for f in doc.get("plausibility", []) if f.get("parameter") == "time budget"],
            "validate_de2000_own": doc["metrics"].get("validate", {}).get("mean", {}).get("de2000_mean"),
            "path_iterations": sum(s.get("iterations", 0) for s in doc["provenance"]["schedule"]
                                   if s["stage"] == "path")}


def run_baseline(job: Path, preset: str, config: dict) -> dict:
    """One run of scripts/baseline_mitsuba.py in a fresh process (same record as :func:`run_process`)."""
    with tempfile.TemporaryDirectory(prefix="pbrfit-baseline-") as tmp:
        out = Path(tmp) / "material.json"
        cmd = [sys.executable, str(ROOT / "scripts" / "baseline_mitsuba.py"), str(job), "--preset", preset,
               "--out", str(out), *config["args"]]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr, peak_mib = _communicate_with_rusage(proc)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"baseline_mitsuba exited {proc.returncode}: {stderr.strip().splitlines()[-1:]}")
        doc = json.loads(out.read_text())
    return {"wall_s": wall, "peak_rss_mib": peak_mib, "timings": {"setup": doc["setup_s"], "fit": doc["fit_s"]},
            "start_up_and_writing_s": wall - doc["setup_s"] - doc["fit_s"], "material": doc["parameters"],
            "fitted": doc["fitted"], "stopped": f"{doc['iterations']} iterations at {doc['spp']} spp",
            "validate_de2000_own": None, "path_iterations": doc["iterations"]}


def run_case(finish: str, shape: str, configs: list[dict], args, cache: Path) -> dict:
    from pbrfit.job import load_job
    from pbrfit.params import default_material

    spec = B._spec(finish, shape, cache, args.resolution, args.samples)
    case_dir = B._render(spec, cache)
    material, preset, _ = B.FINISHES[finish]
    preset = None if args.no_preset else preset
    truth = default_material() | material
    scene = load_job(case_dir / "job.toml").scene
    row = {"finish": finish, "shape": shape, "preset": preset, "layers_true": _layers_on(truth),
           "truth_judge": B._cycles_judge(spec, truth, scene, cache, case_dir)["pixel"], "configs": {}}
    for config in configs:
        runner = run_baseline if config.get("baseline") else run_process
        runs = [runner(case_dir / "job.toml", preset, config) for _ in range(args.repeat)]
        walls = [r["wall_s"] for r in runs]
        last = runs[-1]
        row["configs"][config["name"]] = {
            "wall_s_median": statistics.median(walls), "wall_s": walls,
            "peak_rss_mib": max((r["peak_rss_mib"] or 0) for r in runs) or None,
            "timings": last["timings"], "start_up_and_writing_s": last["start_up_and_writing_s"],
            "stopped": last["stopped"], "path_iterations": last["path_iterations"], "notes": last.get("notes", []),
            "layers_on": _layers_on(last["material"]),
            "validate_de2000_own": last["validate_de2000_own"],
            "judge": B._cycles_judge(spec, last["material"], scene, cache, case_dir)["pixel"],
            "parameter_errors": B._param_errors(truth, last["material"], last["fitted"])}
    return row


def _layers_on(material: dict) -> list[str]:
    """The layer switches (:data:`pbrfit.layers.LAYER_SWITCHES`) ``material`` has on."""
    from pbrfit.layers import LAYER_SWITCHES

    return [n for n in LAYER_SWITCHES if float(material.get(n, 0.0)) > 0.0]


def write_table(rows: list[dict], configs: list[dict], out: Path, args) -> str:
    names = [c["name"] for c in configs]
    command = "pbrfit fit JOB" if args.no_preset else "pbrfit fit JOB --preset P"
    lines = [f"Machine: {describe_machine()}. Each run is a fresh `{command}` process "
             f"(median of {args.repeat}); {args.resolution} px, 4 train views, 6 validation views. "
             "ΔE2000: the fitted material re-rendered by Cycles on the validation views (another seed) "
             "against the references; *floor*: the true material through the same judge.", ""]
    for name, c in zip(names, configs):
        if c.get("baseline"):
            lines.append(f"- `{name}`: scripts/baseline_mitsuba.py {' '.join(c['args'])} (Mitsuba prb, masked L2, "
                         "Adam, 200 iterations at 16 spp unless ARGS say otherwise)")
            continue
        lines.append(f"- `{name}`: {' '.join(c['args']) or 'the default options'}"
                     + (f", checkout {c['checkout']}" if c["checkout"] else ""))
    lines += ["", "| finish | shape | floor ΔE | " + " | ".join(f"{n} wall s | {n} ΔE" for n in names) + " |",
              "|---|---|---|" + "---|---|" * len(names)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['finish']} | {r['shape']} | error: {r['error']} |")
            continue
        cells = []
        for n in names:
            c = r["configs"][n]
            cells += [f"{c['wall_s_median']:.1f}", f"{c['judge']:.2f}"]
        lines.append(f"| {r['finish']} | {r['shape']} | {r['truth_judge']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Phases (seconds, last run of each case; start-up = process start to reading the job, plus "
              "writing the outputs):", "",
              "| finish | shape | config | start-up + writing | " + " | ".join(PHASES) + " | peak RSS MiB | path its |",
              "|---|---|---|---|" + "---|" * len(PHASES) + "---|---|"]
    for r in rows:
        if "error" in r:
            continue
        for n in names:
            c = r["configs"][n]
            t = c["timings"]
            lines.append(f"| {r['finish']} | {r['shape']} | {n} | {c['start_up_and_writing_s']:.1f} | "
                         + " | ".join(f"{t[p]:.1f}" if p in t else "" for p in PHASES)
                         + f" | {'-' if c['peak_rss_mib'] is None else format(c['peak_rss_mib'], '.0f')} | "
                         + f"{c['path_iterations']} |")
    if args.no_preset:
        lines += ["", "Structure (the layers on; *stopped*: why the fit ended):", "",
                  "| finish | shape | truth | " + " | ".join(f"{n} layers | {n} stopped" for n in names) + " |",
                  "|---|---|---|" + "---|---|" * len(names)]
        for r in rows:
            if "error" in r:
                continue
            cells = []
            for n in names:
                c = r["configs"][n]
                cells += [", ".join(c["layers_on"]) or "none", c["stopped"]]
            lines.append(f"| {r['finish']} | {r['shape']} | {', '.join(r['layers_true']) or 'none'} | "
                         + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "speed.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/speed")
    ap.add_argument("--cases", default="rough_plastic,gold,coated_paint")
    ap.add_argument("--shapes", default="sphere,suzanne")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=256, help="Cycles samples per pixel of the references")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case and config (the median is reported)")
    ap.add_argument("--config", action="append", default=[],
                    help="NAME=ARGS or NAME@CHECKOUT=ARGS (repeatable); default: one config 'default'")
    ap.add_argument("--mitsuba-baseline", nargs="?", const="", default=None, metavar="ARGS",
                    help="also run scripts/baseline_mitsuba.py (with ARGS) as the config 'mitsuba'")
    ap.add_argument("--cache", help="reference cache (default OUT/cache)")
    ap.add_argument("--no-preset", action="store_true",
                    help="the default command as a user types it (no --preset): layer discovery included")
    args = ap.parse_args(argv)
    configs = [_parse_config(c) for c in args.config] or [{"name": "default", "checkout": None, "args": []}]
    if args.mitsuba_baseline is not None:
        configs.append({"name": "mitsuba", "checkout": None, "args": shlex.split(args.mitsuba_baseline),
                        "baseline": True})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else out / "cache"
    (cache / "judge").mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in args.shapes.split(","):
        for finish in args.cases.split(","):
            try:
                row = run_case(finish, shape, configs, args, cache)
            except Exception as e:  # keep benchmarking the other cases; the table shows the failure
                row = {"finish": finish, "shape": shape, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "speed.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=2))
    print(write_table(rows, configs, out, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
