"""The Mitsuba-only baseline of the speed benchmark: the material fit a user would write from
Mitsuba 3's inverse-rendering tutorials, on a pbrfit job.

What it does, as the tutorials do (nothing of pbrfit's fitting is used; pbrfit only reads
the job and its USD stage, so both start from the same data):

- the Mitsuba scene is built from the stage: the part's mesh (per-corner normals), one
  ``perspective`` sensor per train view (USD cameras look down -Z, Mitsuba's down +Z: X and
  Z flipped), the view's HDRI as an ``envmap`` emitter (its lat-long convention equals
  pbrfit's dome frame, so ``to_world`` is the environment's ``world_from_dome``) and a
  ``principled`` BSDF starting from Blender's default material;
- ``prb`` (max depth 5: four bounces), 16 samples per pixel, a fresh seed every iteration;
- the loss is L2 over the pixels inside the reference's alpha (>= 0.99), summed over views;
- Adam (learning rate 0.05), 200 iterations, parameters clamped into their ranges after
  each step.

The preset's parameters map to Mitsuba's principled: base_color, roughness, metallic as
they are; specular_ior_level to ``specular`` (both give F0 = 0.08 * value); coat_weight to
``clearcoat``; coat_roughness to ``clearcoat_gloss`` (Mitsuba: alpha = lerp(0.1, 0.001,
gloss); Blender: alpha = roughness^2). The result is written back in pbrfit's names, so the
benchmark judges it by re-rendering in Cycles like any fit.

Usage::

    python scripts/baseline_mitsuba.py JOB.toml --preset plastic --out material.json \\
        [--iterations 200] [--spp 16]

Needs ``mitsuba`` (``pip install pbrfit[mitsuba]``) and an LLVM for Dr.Jit's CPU backend
(or CUDA).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

#: pbrfit parameter -> (Mitsuba principled key, low, high)
MITSUBA_KEYS = {
    "base_color": ("part.bsdf.base_color.value", 0.0, 1.0),
    "roughness": ("part.bsdf.roughness.value", 0.0, 1.0),
    "metallic": ("part.bsdf.metallic.value", 0.0, 1.0),
    "specular_ior_level": ("part.bsdf.specular", 0.0, 1.0),
    "coat_weight": ("part.bsdf.clearcoat.value", 0.0, 1.0),
    "coat_roughness": ("part.bsdf.clearcoat_gloss.value", 0.0, 1.0),
}


def _gloss_from_coat_roughness(r: float) -> float:
    return float(np.clip((0.1 - r * r) / (0.1 - 0.001), 0.0, 1.0))


def _coat_roughness_from_gloss(g: float) -> float:
    return math.sqrt(0.1 + (0.001 - 0.1) * g)


def build_scene(scene, view_ids: list[int], material: dict, spp: int):
    """The Mitsuba scene of the part lit by the first train view's environment, and one
    sensor per view (all views of a pbrfit job's train split share their environment here)."""
    import mitsuba as mi

    mesh = scene.mesh
    corners = mesh.positions[mesh.triangles].reshape(-1, 3)
    base = np.clip(np.asarray(material["base_color"], float), 0, 1)
    bsdf = {"type": "principled", "base_color": {"type": "rgb", "value": base.tolist()},
            "roughness": float(material["roughness"]), "metallic": float(material["metallic"]),
            "specular": float(material["specular_ior_level"]),
            "clearcoat": float(material["coat_weight"]),
            "clearcoat_gloss": _gloss_from_coat_roughness(float(material["coat_roughness"]))}
    props = mi.Properties()
    props["bsdf"] = mi.load_dict(bsdf)
    m = mi.Mesh("part", len(corners), len(mesh.triangles), props=props, has_vertex_normals=mesh.normals is not None)
    params = mi.traverse(m)
    params["vertex_positions"] = mi.Float(corners.astype(np.float32).ravel())
    params["faces"] = mi.UInt32(np.arange(len(corners), dtype=np.uint32))
    if mesh.normals is not None:
        params["vertex_normals"] = mi.Float(mesh.normals.reshape(-1, 3).astype(np.float32).ravel())
    params.update()

    env = scene.views[view_ids[0]].environment
    image = np.asarray(env.image, np.float32) * np.asarray(env.scale, np.float32).reshape(1, 1, 3)
    to_world = np.eye(4)
    to_world[:3, :3] = np.asarray(env.world_from_dome)
    scene_dict = {"type": "scene", "integrator": {"type": "prb", "max_depth": 5},
                  "emitter": {"type": "envmap", "bitmap": mi.Bitmap(image), "to_world": mi.ScalarTransform4f(to_world)},
                  "part": m}
    sensors = []
    for vi in view_ids:
        cam, h, w = scene.views[vi].camera, *scene.views[vi].image.shape[:2]
        flip = np.diag([-1.0, 1.0, -1.0, 1.0])  # USD camera (-Z forward, +X right) -> Mitsuba (+Z forward, +X left)
        fov = math.degrees(2.0 * math.atan(0.5 * cam.horizontal_aperture / cam.focal_length))
        sensors.append(mi.load_dict({
            "type": "perspective", "fov": fov, "fov_axis": "x",
            "to_world": mi.ScalarTransform4f(np.asarray(cam.world_from_camera) @ flip),
            "sampler": {"type": "independent", "sample_count": spp},
            "film": {"type": "hdrfilm", "width": w, "height": h, "pixel_format": "rgb"}}))
    return mi.load_dict(scene_dict), bsdf, sensors


def fit(job_path: str, parameters: list[str], iterations: int = 200, spp: int = 16,
        learning_rate: float = 0.05, log=print) -> dict:
    import drjit as dr
    import mitsuba as mi

    mi.set_variant("cuda_ad_rgb" if "cuda_ad_rgb" in mi.variants() and _has_cuda() else "llvm_ad_rgb")
    from pbrfit.images import read_image
    from pbrfit.job import load_job
    from pbrfit.params import default_material, normalize_material

    t0 = time.monotonic()
    job = load_job(job_path)
    scene = job.scene
    start = normalize_material(scene.initial_material or default_material())
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    envs = {id(scene.views[i].environment) for i in train}
    if len({scene.views[i].environment.source for i in train}) > 1 and len(envs) > 1:
        raise SystemExit("baseline_mitsuba: the train views use more than one environment; one is supported")
    mscene, _, sensors = build_scene(scene, train, start, spp)
    refs, masks = [], []
    for vi in train:
        img, alpha = read_image(scene.views[vi].image_path)
        refs.append(mi.TensorXf(np.asarray(img, np.float32)))
        masks.append(mi.TensorXf(np.repeat((np.asarray(alpha) >= 0.99)[..., None], 3, -1).astype(np.float32)))
    params = mi.traverse(mscene)
    keys = {n: MITSUBA_KEYS[n] for n in parameters if n in MITSUBA_KEYS}
    opt = mi.ad.Adam(lr=learning_rate)
    for key, _, _ in keys.values():
        opt[key] = params[key]
    params.update(opt)
    setup_s = time.monotonic() - t0
    t1 = time.monotonic()
    for it in range(iterations):
        loss = 0.0
        for k, sensor in enumerate(sensors):
            img = mi.render(mscene, params, sensor=sensor, spp=spp, seed=it * len(sensors) + k)
            loss = loss + dr.sum(dr.square(img - refs[k]) * masks[k]) / dr.maximum(dr.sum(masks[k]), 1.0)
        dr.backward(loss)
        opt.step()
        for key, lo, hi in keys.values():
            opt[key] = dr.clip(opt[key], lo, hi)
        params.update(opt)
        if it % 20 == 0 or it == iterations - 1:
            log(f"iteration {it}: loss {float(np.asarray(loss).ravel()[0]):.6g}")
    fit_s = time.monotonic() - t1
    out = dict(start)
    for n, (key, _, _) in keys.items():
        v = np.asarray(params[key], float).ravel()
        value = v.tolist() if n == "base_color" else float(v[0])
        if n == "coat_roughness":
            value = _coat_roughness_from_gloss(value)
        out[n] = value
    return {"parameters": out, "fitted": list(keys), "setup_s": setup_s, "fit_s": fit_s,
            "iterations": iterations, "spp": spp, "variant": mi.variant()}


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("job")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--out", required=True, help="material.json to write ({parameters, fitted, timings})")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    args = ap.parse_args(argv)
    from pbrfit.params import PRESETS

    result = fit(args.job, list(PRESETS[args.preset]), args.iterations, args.spp, args.learning_rate)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"baseline_mitsuba: {result['iterations']} iterations in {result['fit_s']:.1f} s "
          f"(setup {result['setup_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
