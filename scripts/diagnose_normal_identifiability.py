"""How well can the train photos determine a normal map? A per-texel Cramér-Rao bound.

For a case of ``scripts/benchmark_textures.py`` (its cached references, truth maps and judge
renders), prints the smallest angular error any unbiased estimate of each texel's normal could
have from the train views, given the references' own Monte Carlo noise, and compares it with
what a fit reached (``--fit DIR``, a ``pbrfit fit`` output). Where the bound is above the
issue's 5 degrees, no fitting method can reach that target from these photos without a prior
that happens to be right; where it is far below what the fit reached, the fit leaves accuracy
on the table.

How:

1. **Sensitivities.** Our raster renderer as the normal map's fit uses it (every covered pixel,
   through the camera's pixel filter, the texture fit's sample counts), the truth material and
   the truth maps at ``--resolution``. Each texel's normal is tilted by +-``STEP`` radians about
   two orthogonal axes of its tangent plane (and, with ``--colour-free``, its base colour moved
   by +-``COLOUR_STEP`` per channel) on a lattice of texels ``SPACING`` apart, so that no pixel
   sees two perturbed texels (a pixel's bilinear lookup and filter reach ~1.6 texels at these
   sizes); central differences of the train views' pixels give each pixel's derivative with
   respect to the parameters of the one lattice texel its UV lies nearest to. ``SPACING``^2
   lattice phases cover every texel.
2. **Noise.** Cycles' per-pixel noise of these references: two renders of the truth with
   different seeds (the case's ``refs/courtyard`` and the judge's truth render under
   courtyard, ``judge/<case>-truth-*/refs/courtyard``; both 256 samples), the variance of
   their difference halved, binned by radiance (per channel, log bins), and applied to the
   train references by their radiance (Monte Carlo noise grows with the radiance).
3. **Bound.** Per texel, the Fisher information ``F = sum_p J_p^T diag(1 / sigma_p^2) J_p``
   over its pixels and channels; its inverse's 2x2 tilt block is the smallest covariance of
   the tilt (radians^2); reported as the expected angle of a 2-D Gaussian of that covariance
   (``sqrt(pi / 2)`` x the RMS per axis, i.e. ``sqrt(pi trace / 4)``), in degrees. The bound
   treats the neighbouring texels as known (a block of the full information): the true bound,
   with every texel unknown, is at least as large. With ``--colour-free`` the base colour texel
   is unknown too (the woven fabric fits both maps). The material's scalars are held at the
   truth.

Usage::

    python scripts/diagnose_normal_identifiability.py CACHE/embossed_panel-<hash> CACHE/truth_maps/embossed_panel
        [--resolution 128] [--fit FIT_DIR] [--colour-free] [--extra-hdri city]

Our renderer, not Cycles, gives the sensitivities (at the truth): a diagnosis of what the photos
determine, not a judged figure.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from benchmark_textures import _read_pixels, _resample, _unit

#: tilt of a perturbed normal, radians (central differences)
STEP = 0.02
#: change of a perturbed base colour channel (central differences; the render is affine in it)
COLOUR_STEP = 0.02
#: texels between perturbed texels of one lattice phase
SPACING = 4
#: sample sets of our renderer whose mean the references are compared with
OWN_SETS = 4
#: radiance bins (log-spaced, per channel) of the noise model
NOISE_BINS = 24
#: the truth's tilt classes the figures are split by: (from, to) degrees, label
TILT_CLASSES = ((0, 1, "flat (tilt < 1°)"), (1, 10, "tilt 1-10°"), (10, 90, "tilt > 10°"))


def noise_model(case: Path, views: list[str]):
    """A function radiance (..., 3) -> Cycles' per-pixel noise standard deviation (..., 3), from
    two renders of the truth under courtyard with different seeds (see the module docstring)."""
    name = case.name.split("-")[0]
    judge = sorted(glob.glob(str(case.parent / "judge" / f"{name}-truth-*" / "refs" / "courtyard")))
    if not judge:
        raise SystemExit(f"{case.parent / 'judge'}: no truth judge renders of {name}; "
                         "run scripts/benchmark_textures.py on the case first")
    a_all, d_all = [], []
    for name in views:
        a = _read_pixels(case / "refs" / "courtyard" / f"{name}.exr")
        b = _read_pixels(Path(judge[0]) / f"{name}.exr")
        both = (a[..., 3] > 0.999) & (b[..., 3] > 0.999) if a.shape[-1] > 3 else np.ones(a.shape[:2], bool)
        a_all.append(0.5 * (a[both][:, :3] + b[both][:, :3]))
        d_all.append(a[both][:, :3] - b[both][:, :3])
    mean, diff = np.concatenate(a_all).ravel(), np.concatenate(d_all).ravel()
    keep = mean > 0
    mean, diff = mean[keep], diff[keep]
    edges = np.quantile(np.log(mean), np.linspace(0, 1, NOISE_BINS + 1))
    which = np.clip(np.searchsorted(edges, np.log(mean), side="right") - 1, 0, NOISE_BINS - 1)
    centres = np.array([np.median(np.log(mean[which == k])) for k in range(NOISE_BINS)])
    sigma = np.array([np.sqrt(0.5 * np.mean(diff[which == k] ** 2)) for k in range(NOISE_BINS)])
    rel = sigma / np.exp(centres)
    print("noise (Cycles, 256 samples): sigma / radiance at the radiance quartiles "
          + ", ".join(f"{np.exp(c):.3g}: {r:.3f}" for c, r in list(zip(centres, rel))[:: NOISE_BINS // 4]))

    def sigma_of(radiance: np.ndarray) -> np.ndarray:
        x = np.log(np.maximum(radiance, np.exp(centres[0])))
        return np.interp(x, centres, sigma)

    return sigma_of


def tangent_axes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to the unit normals ``n`` (..., 3) and to each other."""
    ref = np.where(np.abs(n[..., :1]) < 0.9, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    e1 = _unit(ref - (ref * n).sum(-1, keepdims=True) * n)
    return e1, np.cross(n, e1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", type=Path, help="the case's cached folder (job.toml, truth.json, refs/)")
    ap.add_argument("truth_maps", type=Path, help="the case's truth maps (normal.exr, base_color.exr)")
    ap.add_argument("--resolution", type=int, default=128, help="map side (texels)")
    ap.add_argument("--fit", type=Path, help="a pbrfit fit output of the case: its normal map's errors alongside")
    ap.add_argument("--colour-free", action="store_true", help="the base colour texel unknown too")
    ap.add_argument("--extra-hdri", default="", help="also train the 4 train cameras under this HDRI (e.g. city)")
    ap.add_argument("--patches", type=int, default=6, help="patches of texels whose coupled bound is computed")
    ap.add_argument("--patch-size", type=int, default=10, help="texels per side of a patch")
    ap.add_argument("--no-lattice", action="store_true", help="the coupled patches only")
    args = ap.parse_args(argv)

    from pbrfit.job import load_job
    from pbrfit.params import normalize_material
    from pbrfit.render import RasterRenderer
    from pbrfit.renderers import TEXTURE_SAMPLES
    from pbrfit.textures import NORMAL

    res, case = args.resolution, args.case
    # the benchmark's fit trains on the 4 train cameras under forest (the cached job also holds
    # the novel cameras and the other HDRIs' renders of every camera)
    scene = load_job(case / "job.toml").scene
    wanted = {f"Cam{i}" for i in range(4)}
    if args.extra_hdri:
        wanted |= {f"Cam{i}@{args.extra_hdri}" for i in range(4)}
    train = [i for i, v in enumerate(scene.views) if v.name in wanted]
    if len(train) != len(wanted):
        raise SystemExit(f"{case / 'job.toml'}: views {sorted(wanted)} not all there")
    renderer = RasterRenderer(scene, TEXTURE_SAMPLES, max_loss_pixels=1 << 40, filter_pixels=True)
    sigma_of = noise_model(case, [f"Cam{i}" for i in range(4)])

    values = normalize_material(json.loads((case / "truth.json").read_text())["material"])
    material = {k: torch.as_tensor(np.atleast_1d(v), dtype=torch.float32) for k, v in values.items()}
    truth_n = _unit(_resample(_read_pixels(args.truth_maps / "normal.exr")[..., :3] * 2.0 - 1.0, res))
    e1, e2 = tangent_axes(truth_n)
    colour = None
    if (args.truth_maps / "base_color.exr").exists():
        colour = _resample(_read_pixels(args.truth_maps / "base_color.exr")[..., :3], res).astype(np.float64)
    k = 5 if args.colour_free else 2
    if args.colour_free and colour is None:
        raise SystemExit(f"{args.truth_maps}: no base_color.exr for --colour-free")

    def material_with(normals: np.ndarray, base: np.ndarray | None) -> dict:
        m = dict(material, **{NORMAL: torch.as_tensor((normals + 1.0) * 0.5, dtype=torch.float32)})
        if base is not None:
            m["base_color"] = torch.as_tensor(base, dtype=torch.float32)
        return m

    def render(normals: np.ndarray, base: np.ndarray | None, sel: dict | None = None, through=None) -> list:
        """Per train view, (P, 3) radiance of its pixels ``sel`` (default: every loss pixel)."""
        m, sel = material_with(normals, base), sel or pixels
        with torch.no_grad():
            return [(through or renderer).shade(vi, m, sel[vi]).double().numpy() if len(sel[vi]) else np.zeros((0, 3))
                    for vi in train]

    def perturbed(j: int, sign: float, on: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        """The truth's normals and colour with parameter ``j`` (0, 1: a tilt about e1, e2; 2-4: a
        colour channel) moved by ``sign`` x its step at the texels ``on`` (res, res); and the step."""
        if j < 2:
            return np.where(on[..., None], _unit(truth_n + sign * STEP * (e1, e2)[j]), truth_n), colour, STEP
        c = colour.copy()
        c[..., j - 2] = np.where(on, c[..., j - 2] + sign * COLOUR_STEP, c[..., j - 2])
        return truth_n, c, COLOUR_STEP

    started = time.monotonic()
    pixels = {}
    for vi in train:
        renderer.prepare(vi)
        pixels[vi] = renderer.train_subsets[vi]
    base = render(truth_n, colour)
    sig = [sigma_of(b) for b in base]
    # per pixel, the texel its UV lies in (texel centres at (i + 0.5) / res)
    texel = []
    for vi in train:
        uv = renderer.prepare(vi).geometry.uv[pixels[vi]].numpy()
        xc, yc = uv[:, 0] * res - 0.5, (1.0 - uv[:, 1]) * res - 0.5  # texel centres at integers (textures.lookup)
        x = np.clip(np.floor(xc + 0.5), 0, res - 1).astype(int)
        y = np.clip(np.floor(yc + 0.5), 0, res - 1).astype(int)
        texel.append((y, x, yc, xc))
    refs = [scene.views[vi].image.reshape(-1, 3)[renderer.prepare(vi).geometry.pixels[pixels[vi]]].astype(np.float64)
            for vi in train]
    # our renderer's own noise: the same truth through other sample sets (other seeds), as the
    # fit's steps take several sets in turn; the residual is taken against their mean
    others = []
    for s_k in range(1, OWN_SETS):
        r_k = RasterRenderer(scene, TEXTURE_SAMPLES, seed=7919 * s_k, max_loss_pixels=1 << 40, filter_pixels=True,
                             pixels_from=renderer)
        others.append(render(truth_n, colour, through=r_k))
    own = np.mean(np.concatenate([((a - b) / np.maximum(s_, 1e-9)) ** 2 for a, b, s_ in zip(base, others[0], sig)])) / 2
    mean_render = [np.mean([b] + [o[v] for o in others], 0) for v, b in enumerate(base)]
    print(f"our renderer's own noise (one sample set, {TEXTURE_SAMPLES}): {own:.1f}x Cycles' noise variance")
    residual = [r - b for r, b in zip(refs, mean_render)]  # Cycles' references minus our render of the truth

    def chi2(res_):
        return np.mean(np.concatenate([(r / np.maximum(s_, 1e-9)) ** 2 for r, s_ in zip(res_, sig)]))

    raw = chi2(residual)
    # a gain per channel (all views), as a fit's scalar base colour would absorb a uniform
    # difference in brightness or tint: only what no scalar takes up pulls on the texels
    ws = [1.0 / np.maximum(s_, 1e-9) ** 2 for s_ in sig]
    gain = (sum((w * r * b).sum(0) for w, r, b in zip(ws, refs, mean_render))
            / sum((w * b * b).sum(0) for w, b in zip(ws, mean_render)))
    residual = [r - gain * b for r, b in zip(refs, mean_render)]
    print(f"the mean of {OWN_SETS} such renders of the truth against Cycles' references: mean squared residual "
          f"{raw:.1f}x Cycles' own noise variance (1 if the renderers agreed); {chi2(residual):.1f}x after a gain "
          f"per channel ({', '.join(f'{g:.3f}' for g in gain)})")
    own_noise = [(o - b) / math.sqrt(2.0) for o, b in zip(others[0], base)]  # one sample set's noise
    fitted = error = None
    if args.fit is not None:
        f = _read_pixels(args.fit / "textures" / "normal.exr")[..., :3]
        fitted = _unit(_resample(f * 2.0 - 1.0, res))
        error = np.degrees(np.arccos(np.clip((fitted * truth_n).sum(-1), -1.0, 1.0)))
    tilt = np.degrees(np.arccos(np.clip(truth_n[..., 2], -1.0, 1.0)))
    if not args.no_lattice:
        info = np.zeros((res, res, k, k))
        pull = np.zeros((res, res, k))  # sum_p J_p^T W_p r_p: the residual's pull on each texel
        pull_own = np.zeros((res, res, k))
        rows = np.arange(res)
        for oy in range(SPACING):
            for ox in range(SPACING):
                on = np.zeros((res, res), bool)
                on[np.ix_(rows[oy::SPACING], rows[ox::SPACING])] = True
                derivs = []  # per parameter: per view (P, 3)
                for j in range(k):
                    (n_p, c_p, h), (n_m, c_m, _) = perturbed(j, 1.0, on), perturbed(j, -1.0, on)
                    derivs.append([(p - q) / (2 * h) for p, q in zip(render(n_p, c_p), render(n_m, c_m))])
                for v in range(len(train)):
                    _, _, yc, xc = texel[v]
                    # the lattice texel nearest the pixel (at most SPACING / 2 away); the map repeats
                    ny = (oy + SPACING * np.round((yc - oy) / SPACING).astype(int)) % res
                    nx = (ox + SPACING * np.round((xc - ox) / SPACING).astype(int)) % res
                    J = np.stack([derivs[j][v] for j in range(k)], -1)  # (P, 3, k)
                    w = 1.0 / np.maximum(sig[v], 1e-9) ** 2  # (P, 3)
                    per_pixel = np.einsum("pci,pc,pcj->pij", J, w, J)
                    np.add.at(info, (ny, nx), per_pixel)
                    np.add.at(pull, (ny, nx), np.einsum("pci,pc,pc->pi", J, w, residual[v]))
                    np.add.at(pull_own, (ny, nx), np.einsum("pci,pc,pc->pi", J, w, own_noise[v]))
            print(f"  lattice row {oy + 1}/{SPACING} done, {time.monotonic() - started:.0f} s", flush=True)

        seen = info[..., 0, 0] > 0
        if args.fit is not None:
            observed = _read_pixels(args.fit / "textures" / "normal_observed.png")[..., 0] > 0.5
            observed = _resample(observed[..., None].astype(np.float32), res)[..., 0] > 0.5
            seen &= observed
        # texels whose information is not positive definite (a direction no pixel constrains) have
        # no finite bound: counted as undetermined (infinite)
        eig = np.linalg.eigvalsh(info[seen])
        definite = np.zeros((res, res), bool)
        definite[seen] = eig[:, 0] > 1e-9 * eig[:, -1]
        cov = np.full((res, res, 2, 2), np.inf)
        cov[definite] = np.linalg.inv(info[definite])[:, :2, :2]
        bound = np.degrees(np.sqrt(math.pi * np.maximum(np.trace(cov, axis1=-2, axis2=-1), 0.0) / 4.0))
        # the first-order shift of each texel's own least-squares estimate (neighbours known) that the
        # residual between Cycles and our renderer at the truth pulls it by: the renderers' mismatch
        moved = np.linalg.solve(info[definite], np.stack([pull[definite], pull_own[definite]], -1))  # (T, k, 2)
        shift, shift_own = np.full((res, res), np.inf), np.full((res, res), np.inf)
        shift[definite], shift_own[definite] = np.degrees(np.linalg.norm(moved[:, :2], axis=1)).T
        print(f"case {case.name}, {res}² texels, {len(train)} train views, "
              f"{'colour unknown too' if args.colour_free else 'colour known'}: {seen.sum()} texels seen, "
              f"{seen.sum() - definite.sum()} of them with a direction no pixel constrains (bound infinite)")
        b = bound[seen]
        print(f"bound on the normal's angle: median {np.median(b):.2f}°, mean (each at most 90°) "
              f"{np.mean(np.minimum(b, 90)):.2f}°, "
              f"quartiles {np.percentile(b, 25):.2f}° / {np.percentile(b, 75):.2f}°, "
              f"share under 5°: {np.mean(b < 5) * 100:.0f}%")
        print(f"shift by the renderers' mismatch (Cycles' noise and a quarter of ours included): median "
              f"{np.median(shift[seen]):.2f}°, mean (each at most 90°) {np.mean(np.minimum(shift[seen], 90)):.2f}°; "
              f"by one sample set's own noise alone: median {np.median(shift_own[seen]):.2f}°, "
              f"mean {np.mean(np.minimum(shift_own[seen], 90)):.2f}°")
        for lo, hi, label in TILT_CLASSES:
            m = seen & (tilt >= lo) & (tilt < hi)
            if not m.any():
                continue
            line = (f"  {label}: {m.sum() / seen.sum() * 100:.0f}% of texels, bound median {np.median(bound[m]):.2f}° "
                    f"(quartiles {np.percentile(bound[m], 25):.2f}° / {np.percentile(bound[m], 75):.2f}°), "
                    f"mismatch shift median {np.median(shift[m]):.2f}°")
            if fitted is not None:
                line += f", the fit's error mean {error[m].mean():.2f}°"
            print(line)
        if fitted is not None:
            print(f"  all: the fit's error mean {error[seen].mean():.2f}° (flat map {tilt[seen].mean():.2f}°)")

    # coupled bounds: every texel of a patch unknown at once (those around it held at the truth)
    if args.patches > 0:
        patch_bounds, patch_shift, patch_own, patch_tilt, patch_error = [], [], [], [], []
        size, border = args.patch_size, 2
        seen_any = np.zeros((res, res), bool)
        for y, x, _, _ in texel:
            seen_any[y, x] = True
        rng = np.random.default_rng(0)
        tries = done = 0
        while done < args.patches and tries < 1000:
            tries += 1
            y0, x0 = int(rng.integers(0, res - size)), int(rng.integers(0, res - size))
            if not seen_any[y0:y0 + size, x0:x0 + size].all():
                continue
            sel, keep = {}, []
            for v, vi in enumerate(train):
                y, x = texel[v][:2]
                near = (y >= y0 - border) & (y < y0 + size + border) & (x >= x0 - border) & (x < x0 + size + border)
                keep.append(near)
                sel[vi] = pixels[vi][near]
            columns = []
            for ty in range(y0, y0 + size):
                for tx in range(x0, x0 + size):
                    on = np.zeros((res, res), bool)
                    on[ty, tx] = True
                    for j in range(k):
                        (n_p, c_p, h), (n_m, c_m, _) = perturbed(j, 1.0, on), perturbed(j, -1.0, on)
                        columns.append(np.concatenate([((p_ - q_) / (2 * h)).ravel() for p_, q_ in
                                                       zip(render(n_p, c_p, sel), render(n_m, c_m, sel))]))
            J = np.stack(columns, -1)  # (pixels x 3, texels x k)
            w = np.concatenate([(1.0 / np.maximum(sig[v][keep[v]], 1e-9) ** 2).ravel() for v in range(len(train))])
            F = J.T @ (w[:, None] * J)
            vals, vecs = np.linalg.eigh(F)
            null = vals <= 1e-9 * vals[-1]  # directions no pixel constrains: their texels' bound is infinite
            cov = (vecs[:, ~null] / vals[~null]) @ vecs[:, ~null].T
            undetermined = (np.abs(vecs[:, null]) > 1e-3).any(1) if null.any() else np.zeros(len(vals), bool)
            r = np.concatenate([residual[v][keep[v]].ravel() for v in range(len(train))])
            r_own = np.concatenate([own_noise[v][keep[v]].ravel() for v in range(len(train))])
            d, d_own = cov @ (J.T @ (w * r)), cov @ (J.T @ (w * r_own))
            for a, ty in enumerate(range(y0, y0 + size)):
                for b, tx in enumerate(range(x0, x0 + size)):
                    if not (border <= a < size - border and border <= b < size - border):
                        continue  # coupled to the held texels outside
                    t = (a * size + b) * k
                    patch_bounds.append(math.inf if undetermined[t:t + k].any() else
                                        math.degrees(math.sqrt(math.pi * max(np.trace(cov[t:t + 2, t:t + 2]), 0) / 4)))
                    patch_shift.append(math.degrees(float(np.linalg.norm(d[t:t + 2]))))
                    patch_own.append(math.degrees(float(np.linalg.norm(d_own[t:t + 2]))))
                    patch_tilt.append(tilt[ty, tx])
                    patch_error.append(np.nan if error is None else error[ty, tx])
            done += 1
            print(f"  patch {done}/{args.patches} at texel ({y0}, {x0}): "
                  f"{J.shape[0] // 3} pixels, {time.monotonic() - started:.0f} s", flush=True)
        pb, ps, po, pt, pe = map(np.asarray, (patch_bounds, patch_shift, patch_own, patch_tilt, patch_error))
        print(f"coupled ({len(pb)} texels inside {done} patches of {size}x{size}, every texel of a patch "
              f"unknown): bound median {np.median(pb):.2f}° (quartiles {np.percentile(pb, 25):.2f}° / "
              f"{np.percentile(pb, 75):.2f}°), "
              f"share under 5°: {np.mean(pb < 5) * 100:.0f}%; least squares moved by the renderers' mismatch: median "
              f"{np.median(ps):.2f}°, mean {np.mean(np.minimum(ps, 90)):.2f}°; by one sample set's own noise: median "
              f"{np.median(po):.2f}°, mean {np.mean(np.minimum(po, 90)):.2f}°")
        for lo, hi, label in TILT_CLASSES:
            m = (pt >= lo) & (pt < hi)
            if m.any():
                print(f"  {label}: {m.sum()} texels, bound median {np.median(pb[m]):.2f}°, mismatch median "
                      f"{np.median(ps[m]):.2f}°, own noise median {np.median(po[m]):.2f}°"
                      + (f", the fit's error mean {np.nanmean(pe[m]):.2f}°" if error is not None else ""))
    print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
