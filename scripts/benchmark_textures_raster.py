"""The texture benchmark's cases with pbrfit's own raster renderer as the references: a quick A/B
of the map fit's algorithm, not a judgement of it.

``scripts/benchmark_textures.py`` judges a fit by re-rendering it in Cycles, which takes about 40
minutes a case on 2 cores. This script keeps that benchmark's scene, cameras, HDRIs and truth maps
(its cache must hold the case: run it once, ``--references-only`` is enough) but renders the
references, the noise floor and the judge renders with pbrfit's raster renderer at 64 specular
samples, at a smaller size, so that two revisions of the fit can be compared in minutes. Its
numbers say which revision fits better; only the Cycles benchmark says how well.

Per case: the fit (``pbrfit fit --preset P --backend raster --iterations 60`` with a ``[textures]``
table; 4 train cameras under forest, its validation the 2 novel cameras under city), judged under
courtyard and sunset from all 6 cameras: ΔE2000 per pixel inside both masks (radiance / HDRI
white), over the train and the novel cameras; *floor*: the truth re-rendered with another seed.
Map errors as the Cycles benchmark's. ``--baseline REV`` fits with REV's engine too (a git
worktree on its ``core/``), interleaved with the working tree's, on the same references.

Usage::

    python scripts/benchmark_textures_raster.py --cache /tmp/tex/cache --cases worn_metal \\
        [--out out/benchmark_textures_raster] [--resolution 128] [--map-resolution 128] \\
        [--iterations 80] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))

import benchmark_textures as bt
from benchmark_fit import _eroded
from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parents[1]
TRUTH_SEED, FLOOR_SEED, JUDGE_SEED = 1234, 4321, 7


def _case_cache(cache: Path, case: str) -> Path:
    """The Cycles benchmark's folder of ``case`` (scene.usda, hdri/): the newest that has one."""
    found = sorted((p for p in cache.glob(f"{case}-*") if (p / "scene.usda").is_file()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{cache}: no {case}-* folder with scene.usda; run scripts/benchmark_textures.py "
                         f"--cache {cache} --cases {case} --references-only first")
    return found[-1]


def _job_text(scene: Path, views: list[tuple], textures: str = "") -> str:
    lines = [f'scene = "{scene / "scene.usda"}"', 'target = "/root/Part/Part"', textures]
    for cam, hdri, split, image in views:
        lines += ["", "[[views]]", f'camera = "/root/{cam}/{cam}"', f'image = "{image}"']
        if hdri != bt.TRAIN_HDRI:
            lines.append(f'environment = "{scene / "hdri" / f"{hdri}.exr"}"')
        if split:
            lines.append(f'split = "{split}"')
    return "\n".join(lines) + "\n"


def _render(scene: Path, views: list[tuple], folder: Path, material: dict, maps: dict, px: int, seed: int) -> None:
    """Raster renders of ``views`` (cam, hdri, split, image) with ``material`` and ``maps``."""
    import synthetic

    for _, _, _, image in views:  # placeholders: the job loader wants images with a mask
        placeholder = np.zeros((px, px, 4), np.float32)
        placeholder[px // 4: 3 * px // 4, px // 4: 3 * px // 4] = 0.5, 0.5, 0.5, 1.0
        Path(image).parent.mkdir(parents=True, exist_ok=True)
        synthetic.write_exr(Path(image), placeholder)
    job = folder / "render.toml"
    job.write_text(_job_text(scene, [(c, h, None, i) for c, h, _, i in views]))
    synthetic.render_references(job, material, maps=maps, seed=seed)


def _views(folder: Path) -> list[tuple]:
    return [(c["name"], h, None, str(folder / h / f"{c['name']}.exr"))
            for h in (bt.TRAIN_HDRI, bt.FIT_VALIDATE_HDRI, *bt.JUDGE_HDRIS) for c in bt.CAMERAS]


def _judge(scene: Path, refs: Path, renders: Path) -> dict:
    import torch

    from pbrfit import losses as L
    from pbrfit.color import environment_white
    from pbrfit.images import read_environment, read_image

    pooled = {"train_cameras": [], "novel_cameras": []}
    for hdri in bt.JUDGE_HDRIS:
        white = environment_white(read_environment(scene / "hdri" / f"{hdri}.exr"))
        for cam in bt.CAMERAS:
            ref, ref_alpha = read_image(refs / hdri / f"{cam['name']}.exr")
            img, alpha = read_image(renders / hdri / f"{cam['name']}.exr")
            inside = _eroded(ref_alpha >= 0.99) & _eroded(alpha >= 0.99)
            de = L.de2000_map(torch.as_tensor(img), torch.as_tensor(ref), white).numpy()[inside]
            pooled["novel_cameras" if cam in bt.NOVEL_CAMERAS else "train_cameras"].append(de)
    out = {k: float(np.concatenate(v).mean()) for k, v in pooled.items()}
    out["all"] = float(np.concatenate(pooled["train_cameras"] + pooled["novel_cameras"]).mean())
    return out


def _fit(job: Path, out: Path, preset: str, core: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(core))
    cmd = [str(Path(sys.executable).parent / "pbrfit"), "fit", str(job), "--out", str(out), "--preset", preset,
           "--backend", "raster", "--iterations", "60", "--quiet"]
    t = time.monotonic()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.monotonic() - t


def run_case(name: str, args, out: Path, engines: dict[str, Path]) -> list[dict]:
    import OpenImageIO as oiio

    case = bt.CASES[name]
    scene = _case_cache(Path(args.cache).resolve(), name)
    case_maps = case["maps"](bt.TRUTH_RESOLUTION)  # (H, W) scalar maps, (H, W, C) the others
    truth_maps = {k: (v if v.ndim == 3 else v[..., None]) for k, v in case_maps.items()}
    refs = out / "refs" / f"{name}-{args.resolution}"
    views = _views(refs)
    if not (refs / "done").is_file():
        refs.mkdir(parents=True, exist_ok=True)
        _render(scene, views, refs, case["material"], truth_maps, args.resolution, TRUTH_SEED)
        _render(scene, [v for v in _views(refs / "floor") if v[1] in bt.JUDGE_HDRIS], refs / "floor",
                case["material"], truth_maps, args.resolution, FLOOR_SEED)
        (refs / "done").write_text("")
    floor = _judge(scene, refs, refs / "floor")
    train_cams, novel_cams = {x["name"] for x in bt.TRAIN_CAMERAS}, {x["name"] for x in bt.NOVEL_CAMERAS}
    train = [(c, h, None, i) for c, h, _, i in views if h == bt.TRAIN_HDRI and c in train_cams]
    val = [(c, h, "validate", i) for c, h, _, i in views if h == bt.FIT_VALIDATE_HDRI and c in novel_cams]
    textures = (f'[textures]\nmaps = {json.dumps(list(truth_maps))}\nresolution = {args.map_resolution}\n'
                f'uv = "st"\niterations = {args.iterations}\n')
    rows = []
    for label, core in engines.items():
        folder = out / name / label
        folder.mkdir(parents=True, exist_ok=True)
        job = folder / "job.toml"
        job.write_text(_job_text(scene, train + val, textures))
        wall = _fit(job, folder / "fit", case["preset"], core)
        doc = json.loads((folder / "fit" / "material.json").read_text())
        fitted = {}
        for n, entry in doc["textures"].items():
            buf = oiio.ImageBuf(str(folder / "fit" / entry["file"]))
            spec = buf.spec()
            fitted[n] = np.asarray(buf.get_pixels(oiio.FLOAT)).reshape(spec.height, spec.width, -1)[
                ..., : truth_maps[n].shape[-1]]
        judge = folder / "judge"
        _render(scene, [v for v in _views(judge) if v[1] in bt.JUDGE_HDRIS], judge, doc["parameters"], fitted,
                args.resolution, JUDGE_SEED)
        rows.append({"case": name, "engine": label, "judge": _judge(scene, refs, judge), "floor": floor,
                     "map_errors": bt._map_errors(folder / "fit", doc, case_maps),
                     "fit_own": {k: doc["metrics"][k]["mean"]["de2000_mean"] for k in ("train", "validate")
                                 if k in doc["metrics"]},
                     "search": [lv.get("search") for lv in doc.get("texture_levels", [])],
                     "fit_wall_s": wall})
        print(f"[{name}/{label}] judged {rows[-1]['judge']['all']:.2f} (floor {floor['all']:.2f}), "
              f"fit {wall:.0f} s", flush=True)
    return rows


def _errors_cell(errors: dict) -> str:
    cells = []
    for n, e in errors.items():
        if "rmse" in e:
            cells.append(f"{n} RMSE {e['rmse']:.3f}")
        elif "psnr_db" in e:
            cells.append(f"{n} PSNR {e['psnr_db']:.1f} dB")
        elif "mean_angle_deg" in e:
            cells.append(f"{n} {e['mean_angle_deg']:.1f}°")
    return "; ".join(cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="scripts/benchmark_textures.py's cache (scene and HDRIs)")
    ap.add_argument("--out", default="out/benchmark_textures_raster")
    ap.add_argument("--cases", default="worn_metal")
    ap.add_argument("--resolution", type=int, default=128, help="image side, px")
    ap.add_argument("--map-resolution", type=int, default=128, help="[textures] resolution")
    ap.add_argument("--iterations", type=int, default=80, help="[textures] iterations")
    ap.add_argument("--baseline", default=None, help="a git revision whose engine is fitted too")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    engines = {"working tree": ROOT / "core"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                           check=True, capture_output=True)
            engines = {args.baseline: worktree / "core", **engines}
        try:
            rows = [r for name in args.cases.split(",") for r in run_case(name, args, out, engines)]
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                               check=False, capture_output=True)
    doc = {"machine": describe_machine(), "settings": vars(args), "rows": rows}
    (out / "textures_raster.json").write_text(json.dumps(doc, indent=2))
    lines = [f"Machine: {doc['machine']}. Raster references ({args.resolution} px), [textures] "
             f"{args.map_resolution}², {args.iterations} iterations; judged by raster re-renders under "
             f"{' and '.join(bt.JUDGE_HDRIS)} from all 6 cameras (not by Cycles).", "",
             "| case | engine | judged ΔE all / train cams / novel cams | floor | map errors | fit's own train / val | "
             "fit s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        j, own = r["judge"], r["fit_own"]
        lines.append(f"| {r['case']} | {r['engine']} | {j['all']:.2f} / {j['train_cameras']:.2f} / "
                     f"{j['novel_cameras']:.2f} | {r['floor']['all']:.2f} | {_errors_cell(r['map_errors'])} | "
                     f"{own.get('train', float('nan')):.2f} / {own.get('validate', float('nan')):.2f} | "
                     f"{r['fit_wall_s']:.0f} |")
    (out / "textures_raster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
