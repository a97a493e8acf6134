"""Command line: ``pbrfit fit JOB.toml --out DIR`` and ``pbrfit validate JOB.toml --material M``.

Exit status: 0 success; 2 bad input (one line on stderr names the file, prim or option and
what to do; nothing is written); 130 cancelled (Ctrl-C, honoured within about a second in
every phase; nothing is written); 1 anything else (a full disk: one line, nothing written).

Order of a run: every check first (options, the job and its files, the output folder, the
write-back's edit layer), then the fit and the final metrics, then the outputs are staged
beside ``--out`` and published together with the write-back (:mod:`pbrfit.interrupt`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import faults
from .errors import FitCancelled, InputError, PbrfitError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="pbrfit", description="Fit Principled/OpenPBR materials to reference photos.")
    p.add_argument("--version", action="version", version=f"pbrfit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit the target's material to the job's train views")
    f.add_argument("job", help="job file (TOML)")
    f.add_argument("--out", required=True,
                   help="output folder: new, empty, or holding an earlier pbrfit result (its four files are "
                        "replaced together; other files are left alone)")
    f.add_argument("--backend", metavar="{auto,raster,path}", help="auto (default): raster warm start, then path-traced refinement; raster: "
                                     "direct light only, fastest; path: path-traced refinement of the initial "
                                     "material only")
    f.add_argument("--path-iterations", type=int, metavar="N",
                   help="iterations of the path-traced refinement (default 40; 0 skips it)")
    f.add_argument("--path-spp", type=int, metavar="N",
                   help="paths per pixel at the start of the refinement (default 4)")
    f.add_argument("--device", metavar="{auto,cpu,cuda}", help="ray casting device (default auto)")
    f.add_argument("--seed", type=int, help="random seed, 0 .. 2**32-1 (default 0)")
    f.add_argument("--iterations", type=int, help="optimizer iterations in all (default 60)")
    f.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="bound on the whole run: reading the job, the fit, the final metrics and writing "
                        "(setup and one quick metrics pass are a floor; see README)")
    f.add_argument("--preset", metavar="NAME", help="named parameter set to fit (plastic, metal, brushed_metal, coated_paint, "
                                    "fabric, thin_film, subsurface, all)")
    f.add_argument("--fit", metavar="NAMES", help="comma-separated parameters to fit")
    f.add_argument("--freeze", metavar="NAMES", help="comma-separated parameters to keep at their initial values")
    f.add_argument("--loss", metavar="SPEC", help="e.g. de2000=1,l1=10 (names: l1,l2,relative_l2,charbonnier,huber,"
                                                  "de2000,ssim; weights >= 0)")
    f.add_argument("--optimizer", metavar="{lbfgs,adam,adamw}", help="default lbfgs")
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
    v.add_argument("--out", help="also write a report and the material files here (same rules as fit --out)")
    v.add_argument("--split", choices=["train", "validate", "all"], default="all")
    v.add_argument("--device", metavar="{auto,cpu,cuda}", help="ray casting device (default auto)")
    v.add_argument("--seed", type=int)
    v.add_argument("--backend", metavar="{auto,raster,path}", help="renderer of the metrics: path traced (auto, path; default) or raster")
    return p


def _overrides(args) -> dict:
    """The command line's fit options under canonical names, checked
    (:mod:`pbrfit.options`: the same rules as a job file's [fit] table)."""
    from .options import check_table, cli_label, parse_loss, parse_names

    o = {name: getattr(args, name, None) for name in ("preset", "backend", "optimizer", "iterations", "time_budget",
                                                     "seed", "samples", "path_iterations", "path_spp", "threads",
                                                     "device")}
    if getattr(args, "fit", None) is not None:
        o["parameters"] = parse_names(args.fit, "--fit")
    if getattr(args, "freeze", None) is not None:
        o["freeze"] = parse_names(args.freeze, "--freeze")
    if getattr(args, "loss", None) is not None:
        o["loss"] = parse_loss(args.loss, "--loss")
    if getattr(args, "no_stages", False):
        o["staged"] = False
    return check_table(o, label=cli_label, where="command line")


def _resolve(job, overrides: dict):
    from .options import cli_label, resolve, table_label

    return resolve(job.fit_options, overrides, table_labels=table_label(f"job {job.job_path}"),
                   override_labels=cli_label)


def _image_pixels(scene) -> int:
    return sum(int(v.image.shape[0]) * int(v.image.shape[1]) for v in scene.views)


def _phases(progress):
    """Wrap a progress callback: mark each new fit stage as a phase (:mod:`pbrfit.faults`)."""
    seen = {"stage": None}

    def call(p):
        if p.stage != seen["stage"]:
            seen["stage"] = p.stage
            faults.point("final-metrics" if p.stage == "final metrics" else f"stage:{p.stage}")
        progress(p)

    return call


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


def _cmd_fit(args, run, started: float) -> int:
    from dataclasses import asdict

    from .atomic import OutputDir
    from .fit import fit_material
    from .job import load_job
    from .outputs import prepare_output, write_fit_outputs

    faults.point("setup")
    if args.edit_layer and not args.write_back:
        raise InputError("--edit-layer needs --write-back")
    OutputDir(args.out, option="--out").check()  # before reading anything: an empty or unusable --out
    overrides = _overrides(args)
    job = load_job(args.job)
    opts = _resolve(job, overrides)
    opts.budget_start = started
    write_back = _write_back_check(job, args.edit_layer) if args.write_back else None
    out = prepare_output(args.out, option="--out", image_pixels=_image_pixels(job.scene),
                         inputs=job.input_files + ([write_back[1]] if write_back and write_back[1] else []))
    run.on_abort(out.discard)
    try:
        run.check()
        bar = _ProgressBar(opts.iterations + (opts.path_iterations if opts.backend != "raster" else 0),
                           enabled=not args.quiet)
        try:
            result = fit_material(job.scene, opts, progress=_phases(bar), cancel=run.cancel)
        finally:
            bar.close()
        run.check()
        faults.point("writing")
        doc = write_fit_outputs(out, result, job_path=str(job.job_path), input_files=job.input_files,
                                options=asdict(opts), seed=opts.seed, publish=False)
        run.check()
        with run.commit():
            faults.point("publish")
            record = _write_back(job, write_back[0], result.material, args.edit_layer) if write_back else None
            try:
                out.publish(last=("material.json",))
            except BaseException:
                if record is not None:
                    from .writeback_usd import undo

                    undo(write_back[0], record)
                raise
    finally:
        out.discard()  # a no-op after publishing
    _print_summary(doc["metrics"], out.path, result.stopped, time.monotonic() - started)
    for flag in doc["plausibility"]:
        print(f"  {flag.get('severity', 'warning')}: {flag.get('parameter', '')}: {flag.get('message', '')}")
    wall = time.monotonic() - started
    if opts.time_budget is not None and wall > 1.05 * opts.time_budget and \
            not any("more than its time budget" in n["message"] for n in doc["notes"]):
        print(f"  warning: time budget: the run took {wall:.1f} s with --time-budget {opts.time_budget:g} "
              "(writing the outputs took the rest)")
    if record is not None:
        print(f"wrote material {record.material_path} bound to {record.target_path} into {record.edit_layer_file}"
              + (f" (add it as the first sublayer of {job.scene.stage_path} to use it)"
                 if record.sublayer_entry else ""))
    return 0


def _write_back_check(job, edit_layer: str | None):
    """(the open stage, the edit layer's file): every write-back precondition, before the fit."""
    from .usd_stage import open_stage
    from .writeback_usd import check_write_back

    stage = open_stage(job.scene.stage_path)
    return stage, check_write_back(stage, job.scene.target, edit_layer=edit_layer)


def _write_back(job, stage, material: dict, edit_layer: str | None):
    from .writeback_usd import write_back

    return write_back(stage, job.scene.target, material, edit_layer=edit_layer)


def _print_summary(metrics: dict, out, stopped: str | None = None, wall: float | None = None):
    from .outputs import OUTPUT_NAMES

    for split in ("train", "validate"):
        if split in metrics:
            m = metrics[split]["mean"]
            print(f"{split:9s} ΔE2000 mean {_num(m['de2000_mean'], '.2f')}  p95 {_num(m['de2000_p95'], '.2f')}  "
                  f"SSIM {_num(m['ssim'], '.3f')}  ({len(metrics[split]['views'])} views)")
    tail = []
    if stopped:
        tail.append(f"stopped: {stopped}")
    if wall is not None:
        tail.append(f"{wall:.1f} s")
    if out:
        tail.append(f"wrote {', '.join(sorted(OUTPUT_NAMES))} into {out}")
    if tail:
        print("; ".join(tail))


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _cmd_validate(args, run, started: float) -> int:
    from dataclasses import replace

    from .atomic import OutputDir
    from .fit import FitResult, evaluate_material
    from .job import load_job
    from .options import cli_label, resolve
    from .outputs import finite_or_none, prepare_output, read_material_json, write_fit_outputs

    faults.point("setup")
    if args.out is not None:
        OutputDir(args.out, option="--out").check()
    overrides = {"device": args.device, "seed": args.seed, "backend": args.backend}
    opts = resolve(None, overrides, override_labels=cli_label)
    material = read_material_json(args.material)
    job = load_job(args.job)
    scene = job.scene
    if args.split != "all":
        scene = replace(scene, views=[v for v in scene.views if v.split == args.split])
        if not scene.views:
            raise InputError(f"job {args.job} has no '{args.split}' views")
    out = None
    if args.out is not None:
        out = prepare_output(args.out, option="--out", image_pixels=_image_pixels(scene),
                             inputs=job.input_files + [str(Path(args.material).absolute())])
        run.on_abort(out.discard)
    try:
        run.check()
        faults.point("final-metrics")
        views, metrics = evaluate_material(scene, material, opts, cancel=run.cancel)
        run.check()
        if out is not None:
            faults.point("writing")
            result = FitResult(material, material, [], metrics, [], [], views, "validate only", 0.0,
                               list(scene.notes))
            write_fit_outputs(out, result, job_path=str(job.job_path),
                              input_files=job.input_files + [args.material],
                              options={"validate": True, "backend": opts.backend},
                              seed=opts.seed, title=f"pbrfit validate: {Path(args.job).name}", publish=False)
            run.check()
            with run.commit():
                faults.point("publish")
                out.publish(last=("material.json",))
    finally:
        if out is not None:
            out.discard()
    _print_summary(metrics, out.path if out is not None else None, wall=time.monotonic() - started)
    print(json.dumps(finite_or_none({s: d["mean"] for s, d in metrics.items()}), allow_nan=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    from .interrupt import CANCELLED, CancellableRun

    run = CancellableRun()
    # files copied out of a USDZ package go with a cancelled run too
    run.on_abort(lambda: sys.modules["pbrfit.usd_stage"].remove_extracted() if "pbrfit.usd_stage" in sys.modules
                 else None)
    command = _cmd_fit if args.command == "fit" else _cmd_validate
    try:
        return run.run(lambda: command(args, run, started))
    except InputError as e:
        print(f"pbrfit: error: {e}", file=sys.stderr)
        return e.exit_code
    except FitCancelled:
        print(CANCELLED, file=sys.stderr)
        if run.interrupted:  # Ctrl-C: the user wants the prompt back now, not after the teardown
            run.exit_now(FitCancelled.exit_code)
        return FitCancelled.exit_code
    except PbrfitError as e:
        print(f"pbrfit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(CANCELLED, file=sys.stderr)
        return 130
    except MemoryError:
        print("pbrfit: error: out of memory; use smaller or fewer images (see README: image sizes); "
              "nothing was written", file=sys.stderr)
        return 1
    except OSError as e:  # an I/O failure outside the checked paths: one line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"pbrfit: error: {e.strerror or e}{where}; nothing was written", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
