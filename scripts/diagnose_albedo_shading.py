"""Why a textured case's base colour map misses its PSNR: the pixel filter, or the albedo/shading
ambiguity under one lighting.

For a case of ``scripts/benchmark_textures.py`` (its cached references and truth maps), prints:

1. **The pixel filter's blur in texel units**: texels spanned by one pixel of each train view
   (quartiles of the UV step between neighbouring pixels, times the map's side) and the PSNR of
   the truth base colour map blurred by Cycles' pixel filter at that scale (its standard
   deviation :data:`pbrfit.pixel_filter.FILTER_VARIANCE` ** 0.5 px, a Gaussian here): what a fit
   that shades pixel centres, as ours does, could lose to the filter at most.
2. **The base colour that explains the truth's renders with flat normals**: per train pixel,
   the colour ``a`` for which our raster render of the truth material with a flat normal map
   (affine in the base colour: ``S + a D``) equals its render with the truth normal map, splatted
   onto the texels; its PSNR against the truth is what a fit reaches when the normal map's
   shading is baked into the colour. A fit at that PSNR has recovered none of the normal map's
   shading: under one lighting, a rough dielectric's radiance is close to
   ``albedo x irradiance(normal)``, one equation per channel per texel for more unknowns, and
   further views of the same texel add little (the diffuse part does not depend on the view).
   (A second lighting was measured to help the woven fabric only a little: BENCHMARKS.md.)

Usage::

    python scripts/diagnose_albedo_shading.py CACHE/woven_fabric-<hash> CACHE/truth_maps/woven_fabric
        [--resolution 256]

Our renderer, not Cycles, makes the renders of step 2 (both with the same samples): a diagnosis
of what the photos can determine, not a judged figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import torch.nn.functional as F
from benchmark_textures import _read_pixels, _resample


def psnr(fitted: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(((fitted - truth) ** 2).mean()), 1e-12)))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) blurred by a Gaussian of ``sigma`` texels, the map repeating at its borders."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    t = torch.as_tensor(image, dtype=torch.float64).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="circular"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, radius, radius), mode="circular"), k.view(1, 1, -1, 1))
    return t[:, 0].permute(1, 2, 0).numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", type=Path, help="the case's cached folder (job.toml, truth.json, refs/)")
    ap.add_argument("truth_maps", type=Path, help="the case's truth maps (base_color.exr, normal.exr)")
    ap.add_argument("--resolution", type=int, default=256, help="map side the fit uses (texels)")
    args = ap.parse_args(argv)

    from pbrfit.job import load_job
    from pbrfit.params import normalize_material
    from pbrfit.pixel_filter import FILTER_VARIANCE
    from pbrfit.render import RasterRenderer
    from pbrfit.textures import NORMAL, splat, texel_weights

    res = args.resolution
    scene = load_job(args.case / "job.toml").scene
    renderer = RasterRenderer(scene, max_loss_pixels=1 << 40)
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    uvs, steps = [], []
    for vi in train:
        geo = renderer.prepare(vi).geometry
        uvs.append(geo.uv[renderer.train_subsets[vi]])
        image = np.full((geo.height * geo.width, 2), np.nan)
        image[geo.pixels] = geo.uv.numpy()
        image = image.reshape(geo.height, geo.width, 2)
        for d in (image[:, 1:] - image[:, :-1], image[1:] - image[:-1]):
            step = np.linalg.norm(d, axis=-1) * res
            steps.append(step[np.isfinite(step) & (step < 0.25 * res)])  # not across a UV seam
    per_pixel = np.percentile(np.concatenate(steps), [25, 50, 75])
    weights = texel_weights(uvs, res).numpy()
    seen = weights > 0
    truth = _resample(_read_pixels(args.truth_maps / "base_color.exr")[..., :3], res).astype(np.float64)
    t = truth[seen]
    print(f"texels per pixel (train views, quartiles): {per_pixel[0]:.2f} / {per_pixel[1]:.2f} / {per_pixel[2]:.2f}")
    print(f"flat map (the mean colour): PSNR {psnr(t.mean(0, keepdims=True), t):.1f} dB on {seen.sum()} seen texels")
    for scale in (per_pixel[1], per_pixel[2], 2 * per_pixel[2]):
        sigma = FILTER_VARIANCE ** 0.5 * scale
        print(f"truth blurred by the pixel filter at {scale:.2f} texels a pixel (sigma {sigma:.2f} texels): "
              f"PSNR {psnr(gaussian_blur(truth, sigma)[seen], t):.1f} dB")

    values = normalize_material(json.loads((args.case / "truth.json").read_text())["material"])
    material = {k: torch.as_tensor(np.atleast_1d(v), dtype=torch.float32) for k, v in values.items()}
    colour = torch.as_tensor(truth, dtype=torch.float32)
    normals = torch.as_tensor(_resample(_read_pixels(args.truth_maps / "normal.exr")[..., :3], res),
                              dtype=torch.float32)
    explained = []
    with torch.no_grad():
        for vi in train:
            q = renderer.train_subsets[vi]
            bumpy = renderer.shade(vi, dict(material, base_color=colour, **{NORMAL: normals}), q)
            s = renderer.shade(vi, dict(material, base_color=torch.zeros(3)), q)
            d = renderer.shade(vi, dict(material, base_color=torch.ones(3)), q) - s
            explained.append(((bumpy - s) / d.clamp_min(1e-6)).clamp(0, 1))
    sums = splat(uvs, explained, res).numpy()
    ok = weights > 0.5
    baked = sums / np.maximum(weights, 1e-9)[..., None]
    print(f"base colour explaining the truth's renders with flat normals: PSNR {psnr(baked[ok], truth[ok]):.1f} dB "
          f"on {ok.sum()} texels (what baking the normal map's shading into the colour gives)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
