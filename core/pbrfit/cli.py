"""Command line: ``pbrfit fit JOB.toml --out DIR`` and ``pbrfit validate JOB.toml --material M``.

Exit status: 0 success, 2 bad input (one line on stderr says what and how to fix it),
130 cancelled (Ctrl-C; nothing written), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .errors import FitCancelled, InputError, PbrfitError
from .params import DEFAULT_FIT, PARAMETER_NAMES, PRESETS

__all__ = ["main", "build_parser"]


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in PARAMETER_NAMES:
            raise InputError(f"--{what}: unknown parameter '{n}'; known: {', '.join(PARAMETER_NAMES)}")
    return names


def _loss_spec(text: str) -> dict:
    out = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise InputError(f"--loss: weight of '{name}' is not a number: '{weight}'") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="pbrfit", description="Fit Principled/OpenPBR materials to reference photos.")
    p.add_argument("--version", action="version", version=f"pbrfit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit the target's material to the job's train views")
    f.add_argument("job", help="job file (TOML)")
    f.add_argument("--out", required=True, help="output directory (created; files in it are replaced atomically)")
    f.add_argument("--backend", choices=["auto", "raster", "path"],
                   help="auto (default): raster warm start, then path-traced refinement; raster: direct light "
                        "only, fastest; path: path-traced refinement of the initial material only")
    f.add_argument("--path-iterations", type=int, metavar="N", help="iterations of the path-traced refinement (default 40)")
    f.add_argument("--path-spp", type=int, metavar="N", help="paths per pixel at the start of the refinement (default 4)")
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], help="ray casting device (default auto)")
    f.add_argument("--seed", type=int, help="random seed (default 0)")
    f.add_argument("--iterations", type=int, help="optimizer iterations in all (default 60)")
    f.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this many seconds")
    f.add_argument("--preset", choices=sorted(PRESETS), help="named parameter set to fit")
    f.add_argument("--fit", metavar="NAMES", help="comma-separated parameters to fit")
    f.add_argument("--freeze", metavar="NAMES", help="comma-separated parameters to keep at their initial values")
    f.add_argument("--loss", metavar="SPEC", help="e.g. de2000=1,l1=10 (names: l1,l2,charbonnier,huber,de2000,ssim)")
    f.add_argument("--optimizer", choices=["lbfgs", "adam", "adamw"])
    f.add_argument("--samples", type=int, metavar="N", help="light samples per pixel (other strategies scale)")
    f.add_argument("--no-stages", action="store_true", help="fit all parameters at once")
    f.add_argument("--threads", type=int, help="torch CPU threads (default 1; see README)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--write-back", action="store_true",
                   help="author the fitted material on the job's stage and bind it to the target, in a new "
                        "sublayer <scene>.pbrfit.usda (the scene file itself is not changed)")
    f.add_argument("--edit-layer", metavar="PATH", help="with --write-back: the layer to author into instead")

    v = sub.add_parser("validate", help="evaluate a material on the job's views")
    v.add_argument("job")
    v.add_argument("--material", required=True, help="material.json from a fit")
    v.add_argument("--out", help="also write a report and the material files here")
    v.add_argument("--split", choices=["train", "validate", "all"], default="all")
    v.add_argument("--device", choices=["auto", "cpu", "cuda"])
    v.add_argument("--seed", type=int)
    v.add_argument("--backend", choices=["auto", "raster", "path"],
                   help="renderer of the metrics: path traced (auto, path; default) or raster")
    return p


def _resolve_device(name: str | None) -> str:
    """"auto" picks CUDA when torch sees a device, else the CPU; "cuda" without one is an error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if name in (None, "auto"):
        return "cuda" if has_cuda else "cpu"
    if name == "cuda" and not has_cuda:
        raise InputError("--device cuda: no CUDA device is visible to this process; use --device cpu or auto")
    return name


def _options(args, job_options: dict):
    from .fit import FitOptions
    from .render import SampleCounts

    o = dict(job_options)
    opts = FitOptions()
    params = list(DEFAULT_FIT)
    if o.get("preset"):
        if o["preset"] not in PRESETS:
            raise InputError(f"job [fit] preset '{o['preset']}' is unknown; choose from {', '.join(sorted(PRESETS))}")
        params = list(PRESETS[o["preset"]])
    if o.get("parameters"):
        params = list(o["parameters"])
    if getattr(args, "preset", None):
        params = list(PRESETS[args.preset])
    if getattr(args, "fit", None):
        params = _names(args.fit, "fit")
    freeze = list(o.get("freeze", [])) + (_names(args.freeze, "freeze") if getattr(args, "freeze", None) else [])
    opts.parameters = [n for n in params if n not in set(freeze)]
    opts.bounds = {k: tuple(v) for k, v in (o.get("bounds") or {}).items()}
    for key, attr in (("iterations", "iterations"), ("time_budget", "time_budget"), ("seed", "seed"),
                      ("backend", "backend"), ("optimizer", "optimizer"), ("path_iterations", "path_iterations"),
                      ("path_spp", "path_spp"), ("path_max_spp", "path_max_spp"), ("path_depth", "path_depth")):
        if o.get(key) is not None:
            setattr(opts, attr, o[key])
        if getattr(args, attr, None) is not None:
            setattr(opts, attr, getattr(args, attr))
    loss = o.get("loss")
    if isinstance(loss, str):
        loss = {loss: 1.0}
    if getattr(args, "loss", None):
        loss = _loss_spec(args.loss)
    if loss:
        opts.loss = dict(loss)
    samples = getattr(args, "samples", None) or o.get("samples")
    if samples:
        s = int(samples)
        opts.samples = SampleCounts(light=s, cosine=max(1, s // 4), specular=max(1, s // 2), coat=max(1, s // 4))
    if getattr(args, "threads", None):
        opts.threads = args.threads
    if getattr(args, "no_stages", False):
        opts.staged = False
    opts.path_max_spp = max(opts.path_max_spp, opts.path_spp)
    opts.device = _resolve_device(getattr(args, "device", None) or o.get("device"))
    opts.validate()
    return opts


class _ProgressBar:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, leave=True)

    def __call__(self, p):
        if self.bar is None:
            return
        if max(p.total, p.iteration) != self.bar.total:  # the fit knows its total (path stage included)
            self.bar.total = max(p.total, p.iteration)
        self.bar.update(p.iteration - self.bar.n)
        post = {"stage": p.stage, "loss": f"{p.loss:.4g}", "dE train": f"{p.train_de2000:.2f}"}
        if p.validate_de2000 is not None:
            post["dE val"] = f"{p.validate_de2000:.2f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _cmd_fit(args) -> int:
    from dataclasses import asdict

    from .fit import fit_material
    from .job import load_job
    from .outputs import write_fit_outputs

    if args.edit_layer and not args.write_back:
        raise InputError("--edit-layer needs --write-back")
    job = load_job(args.job)
    opts = _options(args, job.fit_options)
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        cancel.set()

    signal.signal(signal.SIGINT, on_sigint)
    bar = _ProgressBar(opts.iterations + (opts.path_iterations if opts.backend != "raster" else 0),
                       enabled=not args.quiet)
    try:
        result = fit_material(job.scene, opts, progress=bar, cancel=cancel)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    options = asdict(opts)
    doc = write_fit_outputs(args.out, result, job_path=str(job.job_path), input_files=job.input_files,
                            options=options, seed=opts.seed)
    _print_summary(doc["metrics"], args.out, result.stopped, result.wall_time)
    for flag in doc["plausibility"]:
        print(f"  {flag.get('severity', 'warning')}: {flag.get('parameter', '')}: {flag.get('message', '')}")
    if args.write_back:
        _write_back(job, result.material, args.edit_layer)
    return 0


def _write_back(job, material: dict, edit_layer: str | None) -> None:
    from pxr import Usd

    from .writeback_usd import write_back

    stage = Usd.Stage.Open(job.scene.stage_path)
    record = write_back(stage, job.scene.target, material, edit_layer=edit_layer)
    print(f"wrote material {record.material_path} bound to {record.target_path} into {record.edit_layer_file}"
          + (f" (add it as the first sublayer of {job.scene.stage_path} to use it)" if record.sublayer_entry else ""))


def _print_summary(metrics: dict, out, stopped: str | None = None, wall: float | None = None):
    for split in ("train", "validate"):
        if split in metrics:
            m = metrics[split]["mean"]
            print(f"{split:9s} ΔE2000 mean {m['de2000_mean']:.2f}  p95 {m['de2000_p95']:.2f}  "
                  f"SSIM {m['ssim']:.3f}  ({len(metrics[split]['views'])} views)")
    tail = []
    if stopped:
        tail.append(f"stopped: {stopped}")
    if wall is not None:
        tail.append(f"{wall:.1f} s")
    if out:
        tail.append(f"wrote {Path(out) / 'material.json'} and report.html")
    if tail:
        print("; ".join(tail))


def _cmd_validate(args) -> int:
    from dataclasses import replace

    from .fit import FitOptions, FitResult, evaluate_material
    from .job import load_job
    from .outputs import read_material_json, write_fit_outputs
    from .params import normalize_material

    job = load_job(args.job)
    material = normalize_material(read_material_json(args.material), source=str(args.material))
    scene = job.scene
    if args.split != "all":
        scene = replace(scene, views=[v for v in scene.views if v.split == args.split])
        if not scene.views:
            raise InputError(f"job {args.job} has no '{args.split}' views")
    opts = FitOptions(device=_resolve_device(args.device), seed=args.seed or 0, backend=args.backend or "auto")
    views, metrics = evaluate_material(scene, material, opts)
    if args.out:
        result = FitResult(material, material, [], metrics, [], [], views, "validate only", 0.0)
        write_fit_outputs(args.out, result, job_path=str(job.job_path),
                          input_files=job.input_files + [args.material],
                          options={"validate": True, "backend": opts.backend},
                          seed=opts.seed, title=f"pbrfit validate: {Path(args.job).name}")
    _print_summary(metrics, args.out)
    print(json.dumps({s: d["mean"] for s, d in metrics.items()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _cmd_fit(args) if args.command == "fit" else _cmd_validate(args)
    except InputError as e:
        print(f"pbrfit: error: {e}", file=sys.stderr)
        return e.exit_code
    except FitCancelled as e:
        print(f"pbrfit: {e}", file=sys.stderr)
        return e.exit_code
    except PbrfitError as e:
        print(f"pbrfit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("pbrfit: cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
