"""Command line: ``pbrfit fit JOB.toml --out DIR``, ``pbrfit validate JOB.toml --material M`` and
``pbrfit calibrate PHOTOS --board 7x5 --square 30mm --marker 22mm --out cameras.usda``.

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

from . import faults, fit_health
from .errors import FitCancelled, InputError, PbrfitError
from .options import add_fit_arguments, fit_overrides

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
    add_fit_arguments(f)
    _progress_options(f)
    f.add_argument("--write-back", action="store_true",
                   help="author the fitted material on the job's stage and bind it to the target, in a new "
                        "sublayer <scene>.pbrfit.usda (the scene file itself is not changed)")
    f.add_argument("--edit-layer", metavar="PATH", help="with --write-back: the layer to author into instead")

    c = sub.add_parser("calibrate", help="camera intrinsics and poses from photos of a ChArUco board, as USD cameras")
    c.add_argument("photos", help="a folder of photos (JPEG, PNG, TIFF) of the board, one camera and lens")
    c.add_argument("--board", required=True, help="squares, COLUMNSxROWS, e.g. 7x5")
    c.add_argument("--square", required=True, help="the squares' side with its unit, e.g. 30mm")
    c.add_argument("--marker", required=True, help="the markers' side with its unit, e.g. 22mm")
    c.add_argument("--dictionary", default="5X5_100", help="the ArUco dictionary (OpenCV's name without DICT_; "
                                                            "default 5X5_100)")
    c.add_argument("--out", required=True, help="the cameras' USD stage to write, e.g. cameras.usda (beside it: "
                                                "<stem>_undistorted/ and <stem>.json)")
    c.add_argument("--k3", action="store_true", help="also fit the sixth-order radial distortion (wide-angle lenses)")

    v = sub.add_parser("validate", help="evaluate a material on the job's views")
    v.add_argument("job")
    v.add_argument("--material", required=True, help="material.json from a fit")
    v.add_argument("--out", help="also write a report and the material files here (same rules as fit --out)")
    v.add_argument("--split", choices=["train", "validate", "all"], default="all")
    v.add_argument("--device", metavar="{auto,cpu,cuda}", help="where the renders run (default auto: the CPU)")
    v.add_argument("--seed", type=int)
    v.add_argument("--backend", metavar="{auto,raster,path}",
                   help="renderer of the metrics: path traced (auto, path; default) or raster")
    _progress_options(v)
    return p


def _progress_options(p) -> None:
    from .progress import MODES

    p.add_argument("--progress", choices=MODES, default="auto",
                   help="auto (a bar on a terminal, else a line every few seconds; on stderr), bar, lines, none, or "
                        "json: one JSON object per line and event on stdout instead of the summary, for pipelines")
    p.add_argument("--quiet", action="store_true", help="no progress (same as --progress none)")


def _reporter(args):
    from .progress import make_reporter

    return make_reporter("none" if args.quiet else args.progress)


def _resolve(job, overrides: dict):
    from .options import cli_label, resolve, table_label

    return resolve(job.fit_options, overrides, table_labels=table_label(f"job {job.job_path}"),
                   override_labels=cli_label, textures=job.textures, calibrate=job.calibrate)


def _image_pixels(scene) -> int:
    return sum(int(v.image.shape[0]) * int(v.image.shape[1]) for v in scene.views)


def _cmd_fit(args, run, started: float, reporter) -> int:
    from dataclasses import asdict

    from .atomic import OutputDir
    from .fit import fit_material
    from .job import load_job
    from .outputs import prepare_output, write_fit_outputs

    faults.point("setup")
    if args.edit_layer and not args.write_back:
        raise InputError("--edit-layer needs --write-back")
    OutputDir(args.out, option="--out").check()  # before reading anything: an empty or unusable --out
    overrides = fit_overrides(args)
    job = load_job(args.job)
    opts = _resolve(job, overrides)
    opts.budget_start = started
    write_back = _write_back_check(job, args.edit_layer) if args.write_back else None
    out = prepare_output(args.out, option="--out", image_pixels=_image_pixels(job.scene),
                         inputs=job.input_files + ([write_back[1]] if write_back and write_back[1] else []))
    run.on_abort(out.discard)
    try:
        run.check()
        try:
            result = fit_material(job.scene, opts, progress=reporter.progress, cancel=run.cancel)
        finally:
            reporter.close()
        run.check()
        faults.point("writing")
        doc = write_fit_outputs(out, result, job_path=str(job.job_path), input_files=job.input_files,
                                options=asdict(opts), seed=opts.seed, publish=False)
        run.check()
        with run.commit():
            faults.point("publish")
            record = (_write_back(job, write_back[0], result.material, args.edit_layer, result.textures)
                      if write_back else None)
            try:
                out.publish(last=("material.json",))
            except BaseException:
                if record is not None:
                    from .writeback_usd import undo

                    undo(write_back[0], record)
                raise
    finally:
        out.discard()  # a no-op after publishing
    wall = time.monotonic() - started
    # the run-level warnings (over-fitting, not converged: pbrfit.fit_health) first
    flags = sorted(doc["plausibility"], key=lambda f: f.get("parameter") != fit_health.ABOUT)
    lines = [f"  {flag.get('severity', 'warning')}: {flag.get('parameter', '')}: {flag.get('message', '')}"
             for flag in flags]
    if opts.time_budget is not None and wall > 1.05 * opts.time_budget and \
            not any("more than its time budget" in n["message"] for n in doc["notes"]):
        lines.append(f"  warning: time budget: the run took {wall:.1f} s with --time-budget {opts.time_budget:g} "
                     "(writing the outputs took the rest)")
    written = None
    if record is not None:
        written = {"material": str(record.material_path), "target": str(record.target_path),
                   "layer": str(record.edit_layer_file),
                   "add_as_sublayer_of": str(job.scene.stage_path) if record.sublayer_entry else None}
        lines.append(f"wrote material {record.material_path} bound to {record.target_path} into "
                     f"{record.edit_layer_file}" + (f" (add it as the first sublayer of {job.scene.stage_path} to use "
                                                    "it)" if record.sublayer_entry else ""))
    maps = doc.get("textures") or {}
    if maps:
        lines.append("maps: " + ", ".join(f"{name} {e['resolution']}x{e['resolution']} "
                                          f"({100 * e['observed_share']:.0f}% of texels seen) -> {e['file']}"
                                          for name, e in maps.items()))
    structure = doc.get("structure")
    if structure and (structure.get("chosen") not in (None, "warm start") or structure.get("pruned")
                      or structure.get("simplified")):
        lines.append("structure: " + "; ".join(
            ([f"chose '{structure['chosen']}' over the ordinary warm start"]
             if structure.get("chosen") not in (None, "warm start") else [])
            + ([f"switched off {', '.join(structure['pruned'])} (did not pay for itself)"]
               if structure.get("pruned") else [])
            + ([f"set {', '.join(f'{n} {v:g}' for n, v in structure['simplified'].items())} (simplest value)"]
               if structure.get("simplified") else [])) + " (report: Structure)")
    calibration = doc.get("calibration")
    if calibration:
        from .calibration import describe_delta

        lines.append("calibration: " + "; ".join(describe_delta(e) for e in calibration["deltas"])
                     + " (report: Calibration)")
    if reporter.machine:
        reporter.done(_summary(doc["metrics"], out.path, result.stopped, wall, plausibility=doc["plausibility"],
                               notes=doc["notes"], write_back=written, textures=maps or None,
                               structure=structure, calibration=calibration["deltas"] if calibration else None))
    else:
        _print_summary(doc["metrics"], out.path, result.stopped, wall)
        for line in lines:
            print(line)
    return 0


def _write_back_check(job, edit_layer: str | None):
    """(the open stage, the edit layer's file): every write-back precondition, before the fit."""
    from .usd_stage import open_stage
    from .writeback_usd import check_write_back

    stage = open_stage(job.scene.stage_path)
    return stage, check_write_back(stage, job.scene.target, edit_layer=edit_layer)


def _write_back(job, stage, material: dict, edit_layer: str | None, maps: dict | None = None):
    from .writeback_usd import write_back

    return write_back(stage, job.scene.target, material, edit_layer=edit_layer, maps=maps)


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


def _summary(metrics: dict, out, stopped: str | None, wall: float, **extra) -> dict:
    """What a finished run says to a pipeline (the ``done`` event of ``--progress json``)."""
    from .outputs import finite_or_none

    return finite_or_none({"out": str(out) if out else None, "stopped": stopped, "wall_s": round(wall, 3),
                           "metrics": {split: d["mean"] for split, d in metrics.items()}, **extra})


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _cmd_validate(args, run, started: float, reporter) -> int:
    from dataclasses import replace

    from torch import as_tensor as torch_tensor

    from .atomic import OutputDir
    from .fit import FitResult, evaluate_material
    from .job import load_job
    from .options import cli_label, resolve
    from .outputs import finite_or_none, prepare_output, read_material_json, read_material_maps, write_fit_outputs

    faults.point("setup")
    if args.out is not None:
        OutputDir(args.out, option="--out").check()
    overrides = {"device": args.device, "seed": args.seed, "backend": args.backend}
    opts = resolve(None, overrides, override_labels=cli_label)
    material = read_material_json(args.material)
    maps = read_material_maps(args.material)
    job = load_job(args.job)
    scene = job.scene
    applied = _capture_calibration(args.material, scene)
    if applied is not None:
        scene = applied[0]
    if maps and scene.mesh.uvs is None:
        raise InputError(f"material file {args.material} has texture maps but mesh {scene.mesh.prim_path} of job "
                         f"{args.job} has no texture coordinates; add a UV map to the mesh")
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
        views, metrics = evaluate_material(scene, material, opts, cancel=run.cancel,
                                           maps={n: torch_tensor(m.texels) for n, m in maps.items()} or None)
        reporter.close()
        run.check()
        if out is not None:
            faults.point("writing")
            result = FitResult(material, material, [], metrics, [], [], views, "validate only", 0.0,
                               list(scene.notes), textures=maps)
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
    if not reporter.machine:
        _print_summary(metrics, out.path if out is not None else None, wall=time.monotonic() - started)
        if applied is not None:
            print(f"applied the fit's capture calibration: {applied[1]}")
        print(json.dumps(finite_or_none({s: d["mean"] for s, d in metrics.items()}), allow_nan=False))
    reporter.done(_summary(metrics, out.path if out is not None else None, "validate only",
                           time.monotonic() - started))
    return 0


def _capture_calibration(material_path, scene):
    """(``scene`` with the capture calibration a material.json records baked in, its description)
    or None when it records none: a calibrated fit is judged under the capture it was fitted to."""
    from .calibration import Calibration

    try:
        doc = json.loads(Path(material_path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None  # read_material_json has reported it
    entries = ((doc.get("calibration") or {}).get("deltas") if isinstance(doc, dict) else None) or []
    if not entries:
        return None
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    calibration, delta = Calibration.from_summary(scene, entries, train)
    baked = calibration.bake(scene, delta)
    return baked, calibration.describe()


def _cmd_calibrate(args, run, started: float, reporter) -> int:
    from .charuco import PHOTO_SUFFIXES, Board, calibrate, parse_board, parse_length, write_cameras

    columns, rows = parse_board(args.board)
    square, marker = parse_length(args.square, "--square"), parse_length(args.marker, "--marker")
    if marker >= square:
        raise InputError(f"--marker {args.marker} must be smaller than --square {args.square}")
    board = Board(columns, rows, square, marker, args.dictionary)
    board.opencv()  # the dictionary exists and holds enough markers
    folder = Path(args.photos)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of board photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise InputError(f"{folder}: no photos ({', '.join(PHOTO_SUFFIXES)})")
    out = Path(args.out)
    if out.suffix.lower() not in (".usda", ".usd", ".usdc"):
        raise InputError(f"--out {out}: give a USD file name, e.g. cameras.usda")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: its folder {out.parent} does not exist")
    result = calibrate(photos, board, check=run.check, k3=args.k3)
    run.check()
    with run.commit():
        doc = write_cameras(result, photos, out)
    print(f"calibrated {len(doc['cameras'])} of {len(photos)} photos: RMS reprojection error "
          f"{doc['rms_reprojection_error_px']:.3f} px, fx {result.matrix[0, 0]:.1f} px, fy {result.matrix[1, 1]:.1f} "
          f"px, principal point ({result.matrix[0, 2]:.1f}, {result.matrix[1, 2]:.1f}), distortion "
          f"{', '.join(f'{v:+.4f}' for v in result.distortion)}")
    for name, why in result.skipped.items():
        print(f"  skipped {name}: {why}")
    undistorted = out.parent / f"{out.stem}_undistorted"
    print(f"wrote {out}, {out.with_suffix('.json')} and the undistorted photos in {undistorted} "
          f"({time.monotonic() - started:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    from .interrupt import CANCELLED, CancellableRun

    run = CancellableRun()
    # files copied out of a USDZ package go with a cancelled run too
    run.on_abort(lambda: sys.modules["pbrfit.usd_open"].remove_extracted() if "pbrfit.usd_open" in sys.modules
                 else None)
    command = {"fit": _cmd_fit, "validate": _cmd_validate, "calibrate": _cmd_calibrate}[args.command]
    reporter = _reporter(args) if args.command != "calibrate" else _reporter(argparse.Namespace(quiet=True,
                                                                                                progress="none"))
    run.on_abort(lambda: reporter.failed("cancelled", CANCELLED.removeprefix("pbrfit: "), 130))

    def fail(kind: str, line: str, code: int) -> int:
        reporter.close()
        print(line, file=sys.stderr)
        reporter.failed(kind, line.removeprefix("pbrfit: ").removeprefix("error: "), code)
        return code

    try:
        return run.run(lambda: command(args, run, started, reporter))
    except InputError as e:
        return fail("error", f"pbrfit: error: {e}", e.exit_code)
    except FitCancelled:
        code = fail("cancelled", CANCELLED, FitCancelled.exit_code)
        if run.interrupted:  # Ctrl-C: the user wants the prompt back now, not after the teardown
            run.exit_now(code)
        return code
    except PbrfitError as e:
        return fail("error", f"pbrfit: error: {e}", e.exit_code)
    except KeyboardInterrupt:
        return fail("cancelled", CANCELLED, 130)
    except MemoryError:
        return fail("error", "pbrfit: error: out of memory; use smaller or fewer images (see README: image sizes); "
                    "nothing was written", 1)
    except OSError as e:  # an I/O failure outside the checked paths: one line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return fail("error", f"pbrfit: error: {e.strerror or e}{where}; nothing was written", 1)


if __name__ == "__main__":
    sys.exit(main())
