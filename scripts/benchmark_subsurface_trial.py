"""The subsurface trial alone (``FitRun.choose_subsurface``) on the layer-discovery cases.

For each finish and shape, from the material the path refinement started from in session 15's
layer-discovery run (the raster result, with subsurface off: ``benchmarks/discovery_{shape}_
session15.json``), or from the truth with subsurface off (``--start truth``), runs the trial
the default command runs and prints whether it switched subsurface on, each weight's error
(unbiased relative error of 4x4 block means, train and validation views) and the margin in
standard errors. Uses scripts/benchmark_discovery.py's cached Cycles references.

Usage::

    python scripts/benchmark_subsurface_trial.py --cache DIR [--cases subsurface_wax,glossy_plastic]
        [--shapes sphere,suzanne] [--start truth]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import benchmark_discovery as bd
from benchmark_fit import FINISHES

from pbrfit.fit import FitOptions, compute_settings
from pbrfit.fit_run import FitRun
from pbrfit.objective import Objective
from pbrfit.params import DEFAULT_FIT

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--cases", default=",".join(f for f in FINISHES if f not in ("gold", "brushed_aluminium")))
    ap.add_argument("--shapes", default="sphere,suzanne")
    ap.add_argument("--start", choices=("session15", "truth"), default="session15")
    args = ap.parse_args()
    render = argparse.Namespace(resolution=160, samples=256)
    for shape in args.shapes.split(","):
        rows = json.loads((ROOT / f"benchmarks/discovery_{shape}_session15.json").read_text())["rows"]
        for finish in args.cases.split(","):
            spec, case_dir, fit_scene, judge_scene, truth = bd._case(finish, shape, render, args.cache)
            if args.start == "truth":
                start = dict(truth, subsurface_weight=0.0)
            else:
                start = next(r for r in rows if r["finish"] == finish)["path_stage"]["start"]
            o = FitOptions(seed=0, backend="path", parameters=list(DEFAULT_FIT))
            t0 = time.monotonic()
            with compute_settings(o.threads):
                run = FitRun(replace(fit_scene, initial_material=start), o)
                checker = Objective(run.renderers.path_check(), run.train, {"de2000": 1.0}, run.check_cancel,
                                    o.threads)
                trial = run.renderers.subsurface_trial()
                objectives = [Objective(trial, views, {"de2000": 1.0}, run.check_cancel, o.threads)
                              for views in (run.train, run.val)]
                values, errors, _ = run.choose_subsurface(dict(run.initial), checker, *objectives)
            print(json.dumps({"finish": finish, "shape": shape, "start": args.start,
                              "subsurface": values["subsurface_weight"], "errors": errors,
                              "seconds": round(time.monotonic() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
