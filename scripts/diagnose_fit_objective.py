"""Does the texture fit's own objective prefer the truth to what the fit found?

For a case of ``scripts/benchmark_textures.py`` and a fit of it, evaluates the loss the map fit
descends (the job's loss, ΔE2000 + 10 L1 by default, over the train views, every covered pixel
through the pixel filter where a normal map is fitted, the texture fit's sample counts, averaged
over ``--sets`` independent sample sets) and the validation views' ΔE2000, on the same renderer,
for the truth (scalars and maps), the fit, the two mixed (the fit's scalars with the truth's maps
and the other way round), the truth with each fitted map in turn made uniform (a normal map
flat, another its mean) and, with several maps, the fit with each map in turn the truth's.
No Cycles: a diagnosis of the fit's optimization, not a judged figure.

- The fit scores **worse** than the truth: the loss is not what holds it back; either the
  regularizers (``pbrfit.texture_fit.regularizer``, given below for a normal map; on the woven fabric the
  slopes' smoothness charges the truth 0.6-0.8 more than the fits, more than the loss gap), or
  the path the optimizer took (a local minimum, too few steps).
- The fit scores **better**: the loss itself (the renderers' mismatch, the noise) prefers it; a
  better optimizer would not help.

With a normal map, a last column gives what the texture fit's regularizers charge that map (the
slopes' smoothness and the pull toward flat, at the default weights of the ``[textures]`` table
and this job's texel coverage): the loss plus that is what the fit descends, so a truth whose sum
is lower than the fit's was missed by the optimizer, not turned away by the prior.

Usage::

    python scripts/diagnose_fit_objective.py CACHE/woven_fabric-<hash> CACHE/truth_maps/woven_fabric FIT_DIR
        [--job JOB] [--sets 2]

``JOB`` defaults to the fit folder's parent's ``job.toml`` (the benchmark's layout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_textures import _read_pixels, _unit

from pbrfit.job import load_job
from pbrfit.objective import Objective
from pbrfit.options import DEFAULT_LOSS, FitOptions
from pbrfit.params import normalize_material
from pbrfit.renderers import Renderers
from pbrfit.texture_fit import prior_weights, regularizer
from pbrfit.textures import NORMAL, TextureSettings


def _tensors(values: dict) -> dict:
    return {k: torch.as_tensor(np.atleast_1d(v), dtype=torch.float32) for k, v in normalize_material(values).items()}


def _map(path: Path, name: str) -> torch.Tensor:
    texels = _read_pixels(path)[..., :3]
    if name == NORMAL:  # decoded, renormalized, encoded again: the fit's writer rounds
        texels = (_unit(texels * 2 - 1) + 1) / 2
    return torch.as_tensor(texels, dtype=torch.float32)


def _uniform(name: str, texels: torch.Tensor) -> torch.Tensor:
    if name == NORMAL:
        return torch.tensor([0.5, 0.5, 1.0]).expand(8, 8, 3).clone()
    return texels.reshape(-1, texels.shape[-1]).mean(0).expand(8, 8, -1).clone()


def _slopes(texels: torch.Tensor) -> torch.Tensor:
    """(H, W, 2) the slopes (p, q) of an encoded tangent-space normal map: the normal is
    normalize(p, q, 1) (:func:`pbrfit.textures.map_values`)."""
    n = texels.double() * 2 - 1
    return n[..., :2] / n[..., 2:].clamp_min(1e-3)


def _normal_regularizer(texels: torch.Tensor, uvs: list, prior_w: dict) -> float:
    """What :func:`pbrfit.texture_fit.regularizer` charges a normal map ``texels`` at the
    default weights, the pull toward flat weighted by this job's texel coverage ``uvs``
    (``prior_w``: those weights by map size, filled as sizes come)."""
    settings = TextureSettings(maps=(NORMAL,))
    s = _slopes(texels)
    size = s.shape[0]
    if size not in prior_w:
        prior_w[size] = prior_weights(settings, uvs, size).double()
    return float(regularizer(NORMAL, s, torch.zeros_like(s), prior_w[size], settings))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case_cache", type=Path, help="the case's cache folder (truth.json)")
    ap.add_argument("truth_maps", type=Path, help="the case's truth maps folder (<map>.exr)")
    ap.add_argument("fit", type=Path, help="a pbrfit fit output folder of the case")
    ap.add_argument("--job", type=Path, help="the fit's job (default: FIT/../job.toml)")
    ap.add_argument("--sets", type=int, default=2, help="independent sample sets averaged (default 2)")
    args = ap.parse_args(argv)

    scene = load_job(args.job or args.fit.parent / "job.toml").scene
    doc = json.loads((args.fit / "material.json").read_text())
    maps = sorted(doc.get("textures", {}))
    if not maps:
        raise SystemExit(f"{args.fit / 'material.json'}: no texture maps; fit the case with its [textures] table")
    filtered = NORMAL in maps
    made = Renderers(scene, FitOptions())  # the texture fit's renderers, as fit_maps makes them
    renderers = [made.raster_textures(filter_pixels=filtered)]
    for _ in range(1, args.sets):
        renderers.append(made.raster_textures(pixels_from=renderers[-1], filter_pixels=filtered))
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    val = [i for i, v in enumerate(scene.views) if v.split == "validate"]
    loss = doc.get("provenance", {}).get("options", {}).get("loss") or DEFAULT_LOSS
    objectives = [Objective(r, train, loss, workers=2) for r in renderers]
    validator = Objective(renderers[0], val, {"de2000": 1.0}, workers=2) if val else None

    truth_s = _tensors(json.loads((args.case_cache / "truth.json").read_text())["material"])
    fit_s = _tensors(doc["parameters"])
    truth_m = {n: _map(args.truth_maps / f"{n}.exr", n) for n in maps}
    fit_m = {n: _map(args.fit / doc["textures"][n]["file"], n) for n in maps}
    candidates = [("truth", truth_s, truth_m), ("fit", fit_s, fit_m),
                  ("fit's scalars, truth's maps", fit_s, truth_m), ("truth's scalars, fit's maps", truth_s, fit_m)]
    for n in maps:
        candidates.append((f"truth, {n} uniform", truth_s, dict(truth_m, **{n: _uniform(n, truth_m[n])})))
    if len(maps) > 1:  # which fitted map costs the most: the fit with one map the truth's
        for n in maps:
            candidates.append((f"fit, the truth's {n}", fit_s, dict(fit_m, **{n: truth_m[n]})))
    uvs = [renderers[0].prepare(vi).geometry.uv[renderers[0].train_subsets[vi]] for vi in train] if filtered else []
    prior_w: dict = {}
    print(f"{'material':34s} train loss  train ΔE2000  validate ΔE2000{'  normal reg.' if filtered else ''}"
          f"   ({len(train)} train views, {args.sets} sample sets; loss {loss})")
    with torch.no_grad():
        for name, scalars, textures in candidates:
            material = dict(scalars, **textures)
            scores = [o(material) for o in objectives]
            v = validator(material)[1] if validator else float("nan")
            reg = f"  {_normal_regularizer(textures[NORMAL], uvs, prior_w):11.4f}" if filtered else ""
            print(f"{name:34s} {np.mean([float(s[0]) for s in scores]):10.4f}  {np.mean([s[1] for s in scores]):12.3f}"
                  f"  {v:15.3f}{reg}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
