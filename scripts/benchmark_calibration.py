"""Calibration benchmark: Cycles-rendered captures whose job file is off from the truth.

For each finish (scripts/benchmark_fit.py's list, fitted with its preset) on a sphere:

1. Cycles renders the truth from 4 cameras under the train HDRI and 2 cameras under three
   others (cached by spec, shared with benchmark_fit.py).
2. The job the fit reads is made *wrong*, as a real bench's record is: its environment turned
   by ``-YAW`` degrees about the up axis and ``STOPS`` stops dimmer than the light that lit the
   photos, and the photos carry white-balance gains ``WB`` (log R, log B; luminance kept).
3. Fits on the train views only: per wrong job (``PERTURBATIONS``) the job as is
   ("uncalibrated"), with ``[calibrate]`` (``PRIORS``: "calibrated"), and with ``[calibrate]``
   and the grey ball in view named as its reference (``BALL``, known material: "calibrated on
   the ball"); and the true job ("truly calibrated"). The ball is in every photo, clear of the
   part (``MARGIN`` frames both).
4. Each fitted material is re-rendered by Cycles under the truth's three other HDRIs and judged
   against the truth's references (the truth through the same judge gives Cycles' noise floor).

Reported per case and fit: the judged ΔE2000 (pixel and 4x4-block means), parameter errors,
the recovered deltas against the truth, and wall time.

Case "rig": a studio rig (three lamps, black surround) whose job states each lamp's intensity
wrong (``RIG_STOPS``) with the same white balance, calibrated with ``RIG_PRIORS``; judged on a
held-out camera (there is no other lighting).

The cameras are off in every wrong job; calibration aligns them to the part's outline.

Usage::

    python scripts/benchmark_calibration.py --out benchmarks [--cases glossy_plastic,gold]

Writes ``OUT/calibration.json`` and ``OUT/calibration.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from benchmark_fit import FINISHES, _cycles_judge, _param_errors, _render, _spec
from machine import describe as describe_machine

#: how far the job is off from the truth: yaw (degrees), exposure (stops), white balance (log R, log B)
YAW, STOPS, WB = 10.0, 0.7, (0.05, -0.05)
#: each train camera off: rotation (degrees, about a random axis), translation (1 % of the part's
#: 2-unit size, random direction), focal length (relative)
CAMERA_DEGREES, CAMERA_SHIFT, CAMERA_FOCAL = 1.0, 0.02, 0.02
#: the wrong jobs: the issue's (every error) and the same without the exposure error, which no
#: prior can recover from a part alone (exposure and base colour trade: pbrfit.calibration)
PERTURBATIONS = {"all": (YAW, STOPS, WB), "no exposure error": (YAW, 0.0, WB)}
#: the [calibrate] table of the calibrated fit (the issue's example priors; the cameras' twice
#: the errors above)
PRIORS = {"environment_rotation": 5.0, "environment_exposure": 0.5, "white_balance": 0.05,
          "camera_rotation": 2.0, "camera_translation": 0.04, "camera_focal": 0.04}
DEFAULT_CASES = ["glossy_plastic", "gold", "rough_plastic", "rig"]
#: the reference in view: a grey ball of known material above the part (clear of it in every view)
BALL = {"name": "Ball", "location": [0.0, 0.0, 2.0], "radius": 0.3,
        "material": {"base_color": [0.18, 0.18, 0.18], "roughness": 0.8}}
#: framing: the part's bounding sphere fills 1 / MARGIN of the view, so the ball is in view
MARGIN = 2.4
#: the studio-rig case: three lamps, a black surround (tests/test_lights_vs_cycles.py's rig)
RIG = [{"type": "AREA", "energy": 500.0, "shape": "RECTANGLE", "size": 2.0, "size_y": 1.0,
        "location": [-3.0, -3.0, 2.5]},
       {"type": "SUN", "energy": 2.0, "angle": 5.0, "location": [4, -2, 3]},
       {"type": "POINT", "energy": 300.0, "radius": 0.2, "location": [1.0, 3.5, 1.0]}]
#: how far off the job states each lamp (stops, in RIG's order: the photos are that much brighter)
RIG_STOPS = [0.5, -0.4, 0.3]
RIG_PRIORS = {"light_intensity": 0.5, "white_balance": 0.05}
RIG_FINISH = "rough_plastic"


def perturbed(scene, yaw=YAW, stops=STOPS, wb=WB, ball=None):
    """``scene`` (the truth) as the wrong job sees it: environments turned by -yaw degrees and
    dimmer by ``stops``, photos through the white-balance gains ``wb``, cameras off by
    CAMERA_DEGREES, CAMERA_SHIFT and CAMERA_FOCAL (the same draw every call). Without ``ball``
    (the known object) the masks leave the ball out: a mask of the part alone, as a job that
    does not name the ball would have."""
    import numpy as np
    import torch

    from pbrfit.calibration import pole_rotation, white_balance_gains
    from pbrfit.gbuffer import view_geometry
    from pbrfit.raycast import RayCaster
    from pbrfit.silhouette import corrected_camera

    gains = white_balance_gains(torch.tensor(wb, dtype=torch.float64)).numpy().astype(np.float32)
    rng = np.random.default_rng(7)
    views = []
    for v in scene.views:
        env = dataclasses.replace(v.environment, world_from_dome=v.environment.world_from_dome
                                  @ pole_rotation(math.radians(-yaw)), scale=v.environment.scale * 2.0 ** -stops)
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        axis *= math.radians(CAMERA_DEGREES) / np.linalg.norm(axis)
        shift *= CAMERA_SHIFT / np.linalg.norm(shift)
        mask = v.mask
        if BALL_OBJECT and ball is None:  # the ball's pixels (and a 2-pixel rim) out of the mask
            known = BALL_OBJECT[0]
            cover = view_geometry(known.mesh, RayCaster(known.mesh), v, RayCaster(scene.mesh)).coverage
            grown = cover.copy()
            for axis_, step in ((0, 1), (0, -1), (1, 1), (1, -1), (0, 2), (0, -2), (1, 2), (1, -2)):
                grown |= np.roll(cover, step, axis=axis_)
            mask = np.where(grown, 0.0, mask).astype(np.float32)
        views.append(dataclasses.replace(v, environment=env, image=(v.image * gains).astype(np.float32), mask=mask,
                                         camera=corrected_camera(v.camera, -axis, -shift, -math.log1p(CAMERA_FOCAL))))
    return dataclasses.replace(scene, views=views, known=() if ball is None else (ball,))


#: the ball as a known object of the case being run (set by run_case; perturbed() masks it out)
BALL_OBJECT: list = []


def run_case(finish: str, args, cache: Path) -> dict:
    from pxr import Usd

    from pbrfit.calibration import check_calibrate
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.job import load_job
    from pbrfit.params import PRESETS, default_material
    from pbrfit.usd_stage import read_known_object

    spec = _spec(finish, "sphere", cache, args.resolution, args.samples) | {"props": [BALL], "margin": MARGIN}
    case_dir = _render(spec, cache)
    job = load_job(case_dir / "job.toml")
    ball = read_known_object(Usd.Stage.Open(str(case_dir / "scene.usda")), _ball_path(case_dir), None, case_dir,
                             BALL["material"])
    train = dataclasses.replace(job.scene, views=job.scene.split("train"))
    # the judge scores the part's pixels only, not the ball's
    judge_scene = dataclasses.replace(job.scene, views=job.scene.split("validate"), known=(ball,))
    material, preset, _ = FINISHES[finish]
    truth = default_material() | material
    row = {"finish": finish, "preset": preset, "judge_truth": _cycles_judge(spec, truth, judge_scene, cache, case_dir)}
    BALL_OBJECT[:] = [ball]
    fits = [("true", train, None)]
    for label, (yaw, stops, wb) in PERTURBATIONS.items():
        fits += [(f"{label}: uncalibrated", perturbed(train, yaw, stops, wb), None),
                 (f"{label}: calibrated", perturbed(train, yaw, stops, wb), PRIORS),
                 (f"{label}: calibrated on the ball", perturbed(train, yaw, stops, wb, ball=ball), PRIORS)]
    for name, scene, calibrate in fits:
        opts = FitOptions(parameters=list(PRESETS[preset]), seed=0, iterations=args.iterations)
        opts.calibrate = check_calibrate(calibrate, "benchmark") if calibrate else None
        t0 = time.monotonic()
        result = fit_material(scene, opts)
        wall = time.monotonic() - t0
        row[name] = {"judge": _cycles_judge(spec, result.material, judge_scene, cache, case_dir),
                     "parameter_errors": _param_errors(truth, result.material, result.fitted),
                     "material": {n: result.material[n] for n in result.fitted}, "wall_time_s": wall,
                     "train_de2000_own": result.metrics["train"]["mean"]["de2000_mean"],
                     "calibration": result.calibration.get("deltas") if result.calibration else None,
                     "calibration_rounds": result.calibration.get("rounds") if result.calibration else None}
        print(f"  {finish} {name}: judged {row[name]['judge']['pixel']:.2f} ({wall:.0f} s)", flush=True)
    return row


def run_rig(args, cache: Path) -> dict:
    """The studio rig: lamps off by RIG_STOPS and white balance WB; fits as run_case's."""
    import numpy as np
    import torch
    from pxr import Usd

    from pbrfit.calibration import check_calibrate, white_balance_gains
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.images import write_exr
    from pbrfit.job import load_job
    from pbrfit.params import PRESETS, default_material
    from pbrfit.usd_stage import read_known_object

    black = cache / "black.exr"
    if not black.is_file():
        write_exr(black, np.zeros((16, 32, 3), np.float32))
    material, preset, _ = FINISHES[RIG_FINISH]
    spec = {"shape": "sphere", "material": material, "train_hdri": str(black), "cameras": 4,
            "resolution": [args.resolution, args.resolution], "samples": args.samples, "seed": 0, "lights": RIG,
            "props": [BALL], "margin": MARGIN, "out": str(cache)}
    case_dir = _render(spec, cache)
    job = load_job(case_dir / "job.toml")
    ball = read_known_object(Usd.Stage.Open(str(case_dir / "scene.usda")), _ball_path(case_dir), None, case_dir,
                             BALL["material"])
    views = job.scene.split("train")
    # hold out camera 1 for the judge: the fit sees cameras 0, 2 and 3 (no other lighting to judge under)
    judge = dataclasses.replace(job.scene, views=[views[1]], known=(ball,))
    train = dataclasses.replace(job.scene, views=[views[0], views[2], views[3]])
    order = [light.prim_path for light in views[0].lights]
    gains = white_balance_gains(torch.tensor(WB, dtype=torch.float64)).numpy().astype(np.float32)

    def wrong(scene):
        return dataclasses.replace(scene, views=[dataclasses.replace(
            v, image=(v.image * gains).astype(np.float32), lights=tuple(dataclasses.replace(
                li, radiance=tuple(r * 2.0 ** -RIG_STOPS[order.index(li.prim_path)] for r in li.radiance))
                for li in v.lights)) for v in scene.views])

    def judge_of(values):
        return _judge_held_out(spec, values, judge, cache, case_dir)

    truth = default_material() | material
    row = {"finish": f"{RIG_FINISH} (studio rig)", "preset": preset, "judge_truth": judge_of(truth),
           "lights": order}
    for name, scene, calibrate in (("true", train, None), ("lights: uncalibrated", wrong(train), None),
                                   ("lights: calibrated", wrong(train), RIG_PRIORS),
                                   ("lights: calibrated on the ball", dataclasses.replace(wrong(train), known=(ball,)),
                                    RIG_PRIORS)):
        opts = FitOptions(parameters=list(PRESETS[preset]), seed=0, iterations=args.iterations)
        opts.calibrate = check_calibrate(calibrate, "benchmark") if calibrate else None
        t0 = time.monotonic()
        result = fit_material(scene, opts)
        row[name] = {"judge": judge_of(result.material), "wall_time_s": time.monotonic() - t0,
                     "parameter_errors": _param_errors(truth, result.material, result.fitted),
                     "material": {n: result.material[n] for n in result.fitted},
                     "calibration": result.calibration.get("deltas") if result.calibration else None}
        print(f"  rig {name}: judged {row[name]['judge']['pixel']:.2f}", flush=True)
    return row


def _judge_held_out(spec: dict, material: dict, judge_scene, cache: Path, case_dir: Path) -> dict:
    """_cycles_judge on views that are train views of the render (a held-out camera)."""
    judge_scene = dataclasses.replace(judge_scene, views=[dataclasses.replace(v, split="validate")
                                                          for v in judge_scene.views])
    return _cycles_judge(spec, material, judge_scene, cache, case_dir)


def _ball_path(case_dir: Path) -> str:
    """The Ball's Mesh prim in the case's stage."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(case_dir / "scene.usda"))
    return next(str(p.GetPath()) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh) and BALL["name"] in str(p.GetPath()))


def _outline(rounds) -> str:
    """The cameras' round: the mean outline distance before and after, pixels."""
    for r in rounds or []:
        if r.get("cameras"):
            return f"outline {r['outline_px_before']:.2f}→{r['outline_px_after']:.2f} px"
    return ""


def _deltas(entries, yaw: float, stops: float) -> str:
    out = []
    cams = [e for e in entries or [] if e["kind"].startswith("camera_")]
    if cams:
        rot = [e["value"] for e in cams if e["kind"] == "camera_rotation"]
        foc = [e["value"] for e in cams if e["kind"] == "camera_focal"]
        out.append(f"cameras {sum(rot) / max(len(rot), 1):.2f}° ({CAMERA_DEGREES:g}), focal "
                   f"{100 * sum(foc) / max(len(foc), 1):+.1f}% ({100 * CAMERA_FOCAL:+g}%)")
    for e in entries or []:
        if e["kind"] == "environment_rotation":
            out.append(f"yaw {e['value']:+.1f}° ({yaw:+.0f})")
        elif e["kind"] == "environment_exposure":
            out.append(f"exposure {e['value']:+.2f} ({stops:+.1f})")
        elif e["kind"] == "white_balance":
            out.append("WB " + "/".join(f"{g:.3f}" for g in e["value"]))
    return ", ".join(out)


def write_table(rows: list[dict], out: Path, args) -> str:
    import torch

    from pbrfit.calibration import white_balance_gains

    true_gains = white_balance_gains(torch.tensor(WB, dtype=torch.float64)).tolist()
    lines = [
        "# Calibration benchmark (scripts/benchmark_calibration.py)", "",
        f"Machine: {describe_machine()}.", "",
        f"Jobs off from the truth: \"all\": HDRI yaw {YAW:+g}°, exposure {STOPS:+g} stop, white balance gains "
        f"{'/'.join(f'{g:.3f}' for g in true_gains)} (R/G/B), each train camera turned {CAMERA_DEGREES:g}° about a "
        f"random axis, moved {CAMERA_SHIFT:g} (1% of the part's size) and its focal length "
        f"{100 * CAMERA_FOCAL:+g}%; \"no exposure error\": the same with the exposure right. Priors: {PRIORS} "
        "(camera translation in metres). The cameras' recovered rotation is the mean over cameras of the "
        "correction's angle; on a sphere the outline fixes 3 of a camera's 7 degrees of freedom, the prior the "
        f"rest. Sphere, {args.resolution} px, Cycles {args.samples} spp, "
        "4 train views under forest, each finish with its preset; each fitted material re-rendered by Cycles "
        "and judged under the three HDRIs no fit saw (city, courtyard, sunset; 2 views each) against the "
        "truth's references: ΔE2000 pixel mean (4x4-block mean). Colour error: the largest base colour "
        "channel error.", "",
        "| finish | job | floor | truly calibrated | uncalibrated | calibrated | calibrated on the ball | "
        "recovered deltas (truth) | recovered on the ball | colour error unc./cal./ball/true | "
        "roughness error unc./cal./ball/true | wall s unc./cal./ball |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [r for r in rows if "lights: calibrated" not in r]:
        def j(name, r=r):
            d = r[name]["judge"] if name != "floor" else r["judge_truth"]
            return f"{d['pixel']:.2f} ({d['block4']:.2f})"

        def err(name, key, r=r):
            e = r[name]["parameter_errors"].get(key)
            return "-" if e is None else f"{e:.3f}"

        for label, (yaw, stops, _) in PERTURBATIONS.items():
            unc, cal, ball = f"{label}: uncalibrated", f"{label}: calibrated", f"{label}: calibrated on the ball"
            lines.append(
                f"| {r['finish']} | {label} | {j('floor')} | {j('true')} | {j(unc)} | {j(cal)} | {j(ball)} | "
                f"{_deltas(r[cal]['calibration'], yaw, stops)}; {_outline(r[cal].get('calibration_rounds'))} | "
                f"{_deltas(r[ball]['calibration'], yaw, stops)} | "
                f"{err(unc, 'base_color')}/{err(cal, 'base_color')}/{err(ball, 'base_color')}/"
                f"{err('true', 'base_color')} | {err(unc, 'roughness')}/{err(cal, 'roughness')}/"
                f"{err(ball, 'roughness')}/{err('true', 'roughness')} | "
                f"{r[unc]['wall_time_s']:.0f}/{r[cal]['wall_time_s']:.0f}/{r[ball]['wall_time_s']:.0f} |")
    rigs = [r for r in rows if "lights: calibrated" in r]
    if rigs:
        lines += ["", f"Studio rig: {RIG_FINISH} under three lamps and a black surround; the job states the lamps "
                  f"off by {RIG_STOPS} stops (the photos are brighter by that) and the photos carry the white balance "
                  f"above; priors {RIG_PRIORS}. Judged by Cycles on camera 1, which no fit saw.", "",
                  "| finish | floor | truly calibrated | uncalibrated | calibrated | calibrated on the ball | "
                  "recovered on the ball (stops per lamp) | colour error unc./cal./ball/true |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rigs:
            def jr(name, r=r):
                d = r[name]["judge"] if name != "floor" else r["judge_truth"]
                return f"{d['pixel']:.2f} ({d['block4']:.2f})"

            def er(name, r=r):
                e = r[name]["parameter_errors"].get("base_color")
                return "-" if e is None else f"{e:.3f}"

            found = ", ".join(f"{e['value']:+.2f}" for e in r["lights: calibrated on the ball"]["calibration"] or []
                              if e["kind"] == "light_intensity")
            lines.append(f"| {r['finish']} | {jr('floor')} | {jr('true')} | {jr('lights: uncalibrated')} | "
                         f"{jr('lights: calibrated')} | {jr('lights: calibrated on the ball')} | {found} "
                         f"(true {', '.join(f'{x:+.1f}' for x in RIG_STOPS)}) | {er('lights: uncalibrated')}/"
                         f"{er('lights: calibrated')}/{er('lights: calibrated on the ball')}/{er('true')} |")
    text = "\n".join(lines) + "\n"
    (out / "calibration.md").write_text(text)
    (out / "calibration.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=1))
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="Cycles renders (default OUT/cache)")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES))
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--table-only", action="store_true", help="rewrite OUT/calibration.md from OUT/calibration.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        print(write_table(json.loads((args.out / "calibration.json").read_text())["rows"], args.out, args))
        return 0
    cache = args.cache or args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for finish in args.cases.split(","):
        rows.append(run_rig(args, cache) if finish == "rig" else run_case(finish, args, cache))
        print(write_table(rows, args.out, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
