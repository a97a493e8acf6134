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

**The judge is real Cycles**: each fitted material (its Principled BSDF, set as
scripts/cycles_reference.py sets the references') is rendered by Cycles on the job's ball and
camera under each unseen light, a Blender sun of the same irradiance (4 x intensity x colour,
angle 0) in a black world, and compared with the photo (ΔE2000 over the pixels one pixel inside
the mask, each light's white as pbrfit defines it). pbrfit's own render is reported beside it.
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
            faces += [a, b, b + slices, a + slices]  # counter-clockwise seen from outside (USD's rightHanded)
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


JUDGE_SAMPLES = 128
JUDGE_SEED = 7


def render_cycles(spec_path: Path) -> None:
    """(in a subprocess: bpy) Render the job's ball and camera with ``material`` under each of
    ``lights`` ({name: [direction, rgb irradiance]}) into ``out``/<name>.exr."""
    import bpy
    from mathutils import Vector

    sys.path.insert(0, str(HERE))
    from cycles_reference import _new_material

    spec = json.loads(Path(spec_path).read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.usd_import(filepath=spec["scene"], import_lights=False)
    sc = bpy.context.scene
    ball = next(o for o in sc.objects if o.type == "MESH")
    ball.data.materials.clear()
    ball.data.materials.append(_new_material("Fitted", spec["material"]))
    sc.camera = next(o for o in sc.objects if o.type == "CAMERA")
    # the job's camera, 1000 radii away with a sub-millimetre aperture: Blender's sensor is at
    # least 1 mm, so the same field of view from a 1 mm sensor and a proportionally longer lens
    aperture, focal = spec["aperture"], spec["focal"]
    cam = sc.camera.data
    cam.type, cam.sensor_fit, cam.sensor_width, cam.lens = "PERSP", "HORIZONTAL", 1.0, focal / aperture
    cam.shift_x = cam.shift_y = 0.0
    cam.clip_start, cam.clip_end = DISTANCE - 10, DISTANCE + 10
    world = bpy.data.worlds.new("Black")
    world.color = (0.0, 0.0, 0.0)
    if world.node_tree is not None:  # a new world's Background node glows 0.05 grey: make it black
        for node in world.node_tree.nodes:
            if node.bl_idname == "ShaderNodeBackground":
                node.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
                node.inputs["Strength"].default_value = 0.0
    sc.world = world
    sc.render.engine = "CYCLES"
    sc.cycles.device = "CPU"
    sc.cycles.samples = JUDGE_SAMPLES
    sc.cycles.seed = JUDGE_SEED
    sc.cycles.use_denoising = False
    sc.cycles.use_adaptive_sampling = False
    sc.cycles.sample_clamp_direct = sc.cycles.sample_clamp_indirect = 0.0
    sc.render.resolution_x = sc.render.resolution_y = CROP
    sc.render.resolution_percentage = 100
    sc.render.film_transparent = True
    sc.render.image_settings.file_format = "OPEN_EXR"
    sc.render.image_settings.color_depth = "32"
    sc.render.image_settings.color_mode = "RGBA"
    bpy.context.view_layer.update()
    to_world = sc.camera.matrix_world.to_3x3().normalized()
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sc.collection.objects.link(sun)
    for name, (direction, irradiance) in spec["lights"].items():
        peak = max(irradiance)
        sun.data.energy = peak  # a sun's strength is its irradiance (W/m^2) facing it
        sun.data.color = tuple(c / peak for c in irradiance)
        sun.data.angle = 0.0
        # the job's world is the camera's frame (identity rotation); Blender's importer turns the
        # Y-up stage Z-up, so the direction goes through the imported camera's rotation
        d = to_world @ Vector(direction)
        sun.rotation_euler = (-d).to_track_quat("-Z", "Y").to_euler()  # light travels along -L
        sc.render.filepath = str(Path(spec["out"]) / f"{name}.exr")
        bpy.ops.render.render(write_still=True)


def cycles_judge(job_path: Path, material: dict, work: Path) -> dict:
    """ΔE2000 (pixel mean per unseen light, then their mean) of Cycles renders of ``material``
    against the photos of the job's validation views."""
    import torch

    from pbrfit import losses as L
    from pbrfit.images import read_image
    from pbrfit.job import load_job
    from pbrfit.lights import lights_white

    job = load_job(job_path)
    views = [v for v in job.scene.views if v.split == "validate"]
    lights = {}
    for v in views:
        (light,) = v.lights
        # an angle-0 DistantLight's AnalyticLight.radiance is its irradiance (4 x intensity x colour)
        lights[v.name] = [list(np.asarray(light.axes)[:, 2]), list(light.radiance)]
    work.mkdir(parents=True, exist_ok=True)
    camera = views[0].camera
    (work / "spec.json").write_text(json.dumps({"scene": str(job_path.parent / "scene.usda"), "material": material,
                                                "lights": lights, "out": str(work),
                                                "aperture": camera.horizontal_aperture,
                                                "focal": camera.focal_length}))
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--render-cycles", str(work / "spec.json")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    per_view = {}
    for v in views:
        img, alpha = read_image(work / f"{v.name}.exr")
        inside = v.mask >= 0.99
        for axis in (0, 1):  # one pixel inside the mask (the photo's and the render's)
            for shift in (-1, 1):
                inside = inside & np.roll(inside, shift, axis)
        inside &= alpha >= 0.99
        white = lights_white(v.lights, job.scene.mesh.positions.mean(0))
        per_view[v.name] = float(L.de2000(torch.as_tensor(img[inside]), torch.as_tensor(v.image[inside]),
                                          white=white))
    return {"mean": float(np.mean(list(per_view.values()))), "views": per_view}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--render-cycles":
        render_cycles(Path(sys.argv[2]))
        return 0
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
        judged = cycles_judge(args.work / "job" / "job.toml", result["parameters"], out / "cycles")
        rows.append({"fit": label, "seconds": round(seconds, 1), "material": result["parameters"],
                     "structure": (result.get("structure") or {}).get("chosen"),
                     "train": metrics["train"]["mean"], "validate": metrics["validate"]["mean"],
                     "cycles_unseen": judged,
                     "validate_views": {k: v["de2000_mean"] for k, v in metrics["validate"]["views"].items()},
                     "calibration": (result.get("calibration") or {}).get("deltas"),
                     "warnings": [n["message"] for n in result.get("notes", []) if n.get("severity") == "warning"]})
        print(f"{label}: train ΔE {metrics['train']['mean']['de2000_mean']:.2f}, unseen lights ΔE "
              f"{metrics['validate']['mean']['de2000_mean']:.2f} (pbrfit's render), {judged['mean']:.2f} (Cycles) "
              f"({seconds:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diligent.json").write_text(json.dumps({"machine": describe_machine(), "capture": info,
                                                        "train_lights": train, "validate_lights": validate,
                                                        "rows": rows}, indent=1))
    lines = [f"Machine: {describe_machine()}. DiLiGenT ball (real photos, 16-bit linear), {CROP}x{CROP} crop, "
             f"sphere radius {info['radius_px']:.1f} px; {len(train)} train lights, {len(validate)} unseen "
             f"lights; {info['clipped_pixels']} clipped highlight pixels left out. Unseen lights judged by "
             f"Cycles ({JUDGE_SAMPLES} spp renders of the fitted material, ΔE2000 pixel mean over the pixels one "
             "inside the mask); beside it pbrfit's own render against the same photos, mean (p95).", "",
             "| fit | unseen lights, Cycles ΔE2000 | unseen lights, pbrfit's render | train, pbrfit's render | "
             "base colour | roughness | metallic | specular | coat | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["material"]
        lines.append(f"| {r['fit']} | **{r['cycles_unseen']['mean']:.2f}** | "
                     f"{r['validate']['de2000_mean']:.2f} ({r['validate']['de2000_p95']:.2f}) | "
                     f"{r['train']['de2000_mean']:.2f} ({r['train']['de2000_p95']:.2f}) | "
                     f"{', '.join(f'{c:.3f}' for c in m['base_color'])} | {m['roughness']:.3f} | "
                     f"{m.get('metallic', 0):.2f} | {m.get('specular_ior_level', 0.5):.2f} | "
                     f"{m.get('coat_weight', 0):.2f} | {r['seconds']:.0f} |")
    (args.out / "diligent.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
