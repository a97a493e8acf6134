"""A real capture nobody on the team made: the DiLiGenT photometric-stereo "ball" (Shi et al.,
"A Benchmark Dataset and Evaluation for Non-Lambertian and Uncalibrated Photometric Stereo",
CVPR 2016 / TPAMI 2018): a real ball photographed by one camera under 96 calibrated directional
lights (directions and RGB intensities given). pbrfit fits the ball's material on some lights
and is scored on lights the fit never saw.

The data cannot be committed (no licence text grants redistribution; its authors ask for
research use and citation). Get it from https://sites.google.com/site/photometricstereodata/
(DiLiGenT.zip: ``pmsData/ballPNG``), then::

    .venv/bin/python scripts/benchmark_diligent.py --data PATH/TO/ballPNG --out benchmarks

(``--out`` gets ``diligent.md`` and ``diligent.json``; the job built from the data and the fit's
output go to ``--work``). CI does not run it.

How the capture becomes a pbrfit job (every step a stated assumption):

* **Geometry**: a sphere of radius 1 whose centre and radius are the mask's centroid and
  ``sqrt(area / pi)`` in pixels (DiLiGenT gives neither; its normals agree with such a sphere).
* **Camera**: DiLiGenT's camera is treated as orthographic (its normals are); pbrfit renders
  perspective cameras, so the camera sits 1000 radii away with the field of view that gives the
  photo's pixel size (0.1% perspective across the ball). The photo is cropped to a square
  around the ball.
* **Lights**: one UsdLux DistantLight (angle 0) per photo, its +Z along the given direction
  (camera frame: x right, y up, z toward the camera: checked against the photos), colour the
  given RGB intensity, and one common scale chosen so that the median Lambertian albedo reads
  0.5 (the capture has no absolute scale). Each view names its light (``lights = ...``).
* **Photos**: 16-bit linear PNGs, read linear; pixels with a channel at or above 0.995 (a
  clipped highlight) and their neighbours are left out through the mask.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchmark_fit import describe_machine  # noqa: E402  (one machine description for every benchmark)

CROP = 160          # pixels per side of the square crop around the ball
DISTANCE = 1000.0   # camera distance in sphere radii (orthographic within 0.1%)
FOCAL = 50.0        # mm (any: the aperture follows)
CLIPPED = 0.995


def _read(path: Path) -> np.ndarray:
    import OpenImageIO as oiio

    buf = oiio.ImageBuf(str(path))
    if buf.has_error:
        raise SystemExit(f"cannot read {path}: {buf.geterror()}")
    return buf.get_pixels(oiio.FLOAT)


def build_job(data: Path, work: Path, train: list[int], validate: list[int]) -> dict:
    """Write ``work/scene.usda``, ``work/refs/*.exr`` and ``work/job.toml`` from DiLiGenT's ball."""
    from pxr import Gf, Usd, UsdGeom, UsdLux

    from pbrfit.images import write_exr

    names = (data / "filenames.txt").read_text().split()
    directions = np.loadtxt(data / "light_directions.txt")
    intensities = np.loadtxt(data / "light_intensities.txt")
    mask = _read(data / "mask.png")[..., 0] > 0.5
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5  # continuous image coordinates of the centroid
    radius_px = math.sqrt(mask.sum() / math.pi)
    x0, y0 = int(round(cx)) - CROP // 2, int(round(cy)) - CROP // 2
    pixel = 1.0 / radius_px  # world units per pixel at the ball
    centre = np.array([(cx - x0 - CROP / 2) * pixel, -(cy - y0 - CROP / 2) * pixel, 0.0])

    work.mkdir(parents=True, exist_ok=True)
    (work / "refs").mkdir(exist_ok=True)
    stage = Usd.Stage.CreateNew(str(work / "scene.usda"))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())
    ball = UsdGeom.Mesh.Define(stage, "/World/Ball")
    stacks, slices = 96, 192
    theta = np.linspace(0, math.pi, stacks + 1)
    phi = np.linspace(0, 2 * math.pi, slices, endpoint=False)
    pts = [(math.sin(t) * math.cos(p), math.cos(t), math.sin(t) * math.sin(p)) for t in theta for p in phi]
    faces, counts = [], []
    for i in range(stacks):
        for j in range(slices):
            a, b = i * slices + j, i * slices + (j + 1) % slices
            faces += [a, a + slices, b + slices, b]
            counts.append(4)
    points = np.asarray(pts) + centre
    ball.CreatePointsAttr([Gf.Vec3f(*p) for p in points])
    ball.CreateNormalsAttr([Gf.Vec3f(*n) for n in pts])
    ball.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    ball.CreateFaceVertexCountsAttr(counts)
    ball.CreateFaceVertexIndicesAttr(faces)
    ball.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    cam = UsdGeom.Camera.Define(stage, "/World/Cam")
    cam.AddTranslateOp().Set(Gf.Vec3d(0.0, 0.0, DISTANCE))
    aperture = FOCAL * CROP * pixel / DISTANCE
    cam.CreateFocalLengthAttr(FOCAL)
    cam.CreateHorizontalApertureAttr(aperture)
    cam.CreateVerticalApertureAttr(aperture)
    cam.CreateClippingRangeAttr(Gf.Vec2f(DISTANCE - 10, DISTANCE + 10))

    # one common intensity scale: the median Lambertian albedo of the train photos reads 0.5
    yy, xx = np.mgrid[y0:y0 + CROP, x0:x0 + CROP] + 0.5
    nx, ny = (xx - cx) / radius_px, -(yy - cy) / radius_px
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, None))
    normals = np.stack([nx, ny, nz], -1)
    photos, ratios = {}, []
    for k in train + validate:
        rgb = _read(data / names[k])[y0:y0 + CROP, x0:x0 + CROP, :3].astype(np.float64)
        clipped = (rgb >= CLIPPED).any(-1)
        grown = clipped.copy()
        for axis in (0, 1):
            for shift in (-1, 1):
                grown |= np.roll(clipped, shift, axis)
        alpha = mask[y0:y0 + CROP, x0:x0 + CROP] & ~grown
        photos[k] = (rgb, alpha)
        if k in train:
            cos = normals @ directions[k]
            use = alpha & (cos > 0.3)
            ratios.append(np.median(rgb[use].mean(-1) / (intensities[k].mean() * cos[use])))
    # pixel = albedo / pi * E cos, E = 4 c I (a DistantLight's irradiance, Blender's sun)
    scale = math.pi * float(np.median(ratios)) / (4 * 0.5)
    views = []
    for k in train + validate:
        name = Path(names[k]).stem
        light = UsdLux.DistantLight.Define(stage, f"/World/Lights/L{name}")
        light.CreateAngleAttr(0.0)
        light.CreateIntensityAttr(scale)
        light.CreateColorAttr(Gf.Vec3f(*intensities[k]))
        z = directions[k] / np.linalg.norm(directions[k])
        helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        UsdGeom.Xformable(light).AddTransformOp().Set(Gf.Matrix4d(*x, 0, *y, 0, *z, 0, 0, 0, 0, 1))
        rgb, alpha = photos[k]
        write_exr(work / "refs" / f"{name}.exr", np.concatenate([rgb * alpha[..., None], alpha[..., None]], -1)
                  .astype(np.float32))
        views.append({"camera": "/World/Cam", "image": f"refs/{name}.exr", "name": f"light{name}",
                      "lights": f"/World/Lights/L{name}", "split": "train" if k in train else "validate"})
    stage.GetRootLayer().Save()
    lines = ['scene = "scene.usda"', 'target = "/World/Ball"', ""]
    for v in views:
        lines += ["[[views]]"] + [f"{key} = {json.dumps(val)}" for key, val in v.items()] + [""]
    (work / "job.toml").write_text("\n".join(lines))
    return {"radius_px": radius_px, "centre_px": [cx, cy], "light_scale": scale, "crop": [x0, y0, CROP],
            "clipped_pixels": int(sum(int((~a & mask[y0:y0 + CROP, x0:x0 + CROP]).sum()) for _, a in photos.values()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="DiLiGenT's pmsData/ballPNG folder")
    ap.add_argument("--out", default="benchmarks", type=Path)
    ap.add_argument("--work", default=Path("/tmp/pbrfit_diligent"), type=Path)
    ap.add_argument("--train", type=int, default=12, help="train lights (evenly spread over the 96)")
    ap.add_argument("--validate", type=int, default=12, help="validation lights (between the train ones)")
    args = ap.parse_args(argv)
    if not (args.data / "light_directions.txt").is_file():
        print(f"--data {args.data}: no light_directions.txt; give DiLiGenT's pmsData/ballPNG folder (see the "
              "script's docstring for where to get it)", file=sys.stderr)
        return 2
    step = 96 // args.train
    train = list(range(0, 96, step))[:args.train]
    validate = list(range(step // 2, 96, 96 // args.validate))[:args.validate]
    info = build_job(args.data, args.work / "job", train, validate)
    # the train lights calibrated too: DiLiGenT's directions come from a chrome ball, its
    # intensities from a reference: small errors each, which a fit would otherwise put in the material
    job_text = (args.work / "job" / "job.toml").read_text()
    (args.work / "job" / "calibrated.toml").write_text(
        job_text + "\n[calibrate]\nlight_direction = 1.0\nlight_intensity = 0.1\nlight_color = 0.02\n")
    rows = []
    for label, job, extra in (("default command (no preset)", "job.toml", []),
                              ("preset plastic", "job.toml", ["--preset", "plastic"]),
                              ("default, train lights calibrated", "calibrated.toml", [])):
        out = args.work / ("fit_" + Path(job).stem + ("_" + extra[-1] if extra else ""))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pbrfit.cli", "fit", str(args.work / "job" / job),
                            "--out", str(out), *extra], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads((out / "material.json").read_text())
        metrics = result["metrics"]
        rows.append({"fit": label, "seconds": round(seconds, 1), "material": result["parameters"],
                     "structure": (result.get("structure") or {}).get("chosen"),
                     "train": metrics["train"]["mean"], "validate": metrics["validate"]["mean"],
                     "validate_views": {k: v["de2000_mean"] for k, v in metrics["validate"]["views"].items()},
                     "calibration": (result.get("calibration") or {}).get("deltas"),
                     "warnings": [n["message"] for n in result.get("notes", []) if n.get("severity") == "warning"]})
        print(f"{label}: train ΔE {metrics['train']['mean']['de2000_mean']:.2f}, unseen lights ΔE "
              f"{metrics['validate']['mean']['de2000_mean']:.2f} ({seconds:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diligent.json").write_text(json.dumps({"machine": describe_machine(), "capture": info,
                                                        "train_lights": train, "validate_lights": validate,
                                                        "rows": rows}, indent=1))
    lines = [f"Machine: {describe_machine()}. DiLiGenT ball (real photos, 16-bit linear), {CROP}x{CROP} crop, "
             f"sphere radius {info['radius_px']:.1f} px; {len(train)} train lights, {len(validate)} unseen "
             f"lights; {info['clipped_pixels']} clipped highlight pixels left out. ΔE2000 pixel mean (p95) "
             "of pbrfit's own render against the photos.", "",
             "| fit | train ΔE2000 | unseen lights ΔE2000 | base colour | roughness | metallic | specular | coat | "
             "s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["material"]
        lines.append(f"| {r['fit']} | {r['train']['de2000_mean']:.2f} ({r['train']['de2000_p95']:.2f}) | "
                     f"{r['validate']['de2000_mean']:.2f} ({r['validate']['de2000_p95']:.2f}) | "
                     f"{', '.join(f'{c:.3f}' for c in m['base_color'])} | {m['roughness']:.3f} | "
                     f"{m.get('metallic', 0):.2f} | {m.get('specular_ior_level', 0.5):.2f} | "
                     f"{m.get('coat_weight', 0):.2f} | {r['seconds']:.0f} |")
    (args.out / "diligent.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
