"""Fit an object's material in a .blend file, headless, with the pbrfit Blender add-on.

Runs with the PyPI ``bpy`` module or inside Blender::

    python scripts/blender_fit.py FILE.blend --object NAME [--save OUT.blend] [--out DIR]
                                  [the fit options of ``pbrfit fit``: --preset P | --fit a,b,
                                   --iterations N, --backend B, --time-budget S, --loss ..., ...]
    blender -b --python scripts/blender_fit.py -- FILE.blend --object NAME ...

The fit options are the command line's (:func:`pbrfit.options.add_fit_arguments`), checked
with the same rules, and win over the settings saved in the file's pbrfit panel.
``--parameters`` is the older name of ``--fit``. Progress goes to stderr as log lines.

The photographs are the cameras' background images and the lighting is the World's
Environment Texture (see blender_addon/pbrfit_blender/extract.py). The fitted values are
written into the object's Principled BSDF (``--copy-material`` when other objects share
it), ``--save`` writes the .blend atomically (a temporary file beside it, then
``os.replace``), and ``--out`` gets the same material.json, material.mtlx, material.usda
and report.html as ``pbrfit fit``. The add-on is used as installed when it is registered
already (an installed extension), else from blender_addon/ next to this script.

Exit status: 0 done; 2 bad input: a missing, unreadable or corrupt .blend, a missing
object, an unusable --out or --save, a bad option, or an error the add-on reports (bad
scene, shared material, missing dependency): one line on stderr, nothing written; 1
anything else (one line). Everything that can be checked is checked before the fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["main", "parse_args", "save_atomically"]


def _import_engine() -> None:
    """pbrfit as installed (the extension's bundled copy, a pip install), else this checkout's."""
    try:
        import pbrfit  # noqa: F401
    except ImportError:
        sys.path.append(str(ROOT / "core"))


def parse_args(argv=None) -> argparse.Namespace:
    _import_engine()
    from pbrfit.options import add_fit_arguments

    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    ap = argparse.ArgumentParser(prog="blender_fit.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("blend", help="the .blend file")
    ap.add_argument("--object", required=True, help="name of the object whose material to fit")
    ap.add_argument("--save", help="write the updated .blend here (may be the input file)")
    ap.add_argument("--out", help="folder for material.json and report.html")
    ap.add_argument("--copy-material", action="store_true",
                    help="if other objects share the material, give this object its own copy")
    add_fit_arguments(ap)
    ap.add_argument("--parameters", dest="fit", help=argparse.SUPPRESS)  # the older name of --fit
    ap.add_argument("--maps", help="parameters to fit as texture maps on the active UV map, comma-separated "
                                   "(base_color, roughness, metallic, specular_ior_level, coat_weight, coat_roughness)")
    ap.add_argument("--map-resolution", type=int, default=512, help="texels per side of the maps (power of two)")
    ap.add_argument("--map-folder", help="save the map images as EXR here (default: pack them into the .blend)")
    return ap.parse_args(argv)


def save_atomically(path: str | os.PathLike) -> None:
    """Save the open .blend to ``path`` via a temporary file in the same folder."""
    import bpy

    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.blend")
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp), copy=True, check_existing=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _check_save(path: str) -> None:
    """--save must name a .blend file in a folder that exists (or can be made) and can be written."""
    from pbrfit.errors import InputError

    target = Path(os.path.abspath(path))
    if not str(path).strip():
        raise InputError("--save is empty; give the .blend file to write")
    if target.is_dir():
        raise InputError(f"--save {target} is a folder; give a .blend file name")
    if target.suffix.lower() != ".blend":
        raise InputError(f"--save {target} must end in .blend")
    anchor = target.parent
    while not anchor.exists():
        anchor = anchor.parent
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise InputError(f"--save {target}: cannot write in {anchor}; choose another path")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"--save {target} is read-only; choose another path")


def _preflight(args) -> dict:
    """Every check that needs no Blender: options, --out, --save (InputError). Returns the
    fit options given, under canonical names."""
    from pbrfit.errors import InputError
    from pbrfit.options import fit_overrides
    from pbrfit.outputs import check_output_folder

    overrides = fit_overrides(args)
    if args.maps:
        from pbrfit.textures import check_textures

        table = {"maps": [m.strip() for m in args.maps.split(",") if m.strip()], "resolution": args.map_resolution}
        check_textures(table, "--maps/--map-resolution")
        overrides["textures"] = table
    if args.out is not None:
        check_output_folder(args.out, option="--out", inputs=[os.path.abspath(args.blend)])
    if args.save is not None:
        _check_save(args.save)
    blend = Path(args.blend)
    if not blend.exists():
        raise InputError(f"{blend}: no such .blend file; check the path")
    if not blend.is_file():
        raise InputError(f"{blend} is not a file; give a .blend file")
    with open(blend, "rb") as f:
        head = f.read(7)
    # a .blend starts with "BLENDER" (or is gzip/zstd-compressed)
    if not (head.startswith(b"BLENDER") or head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd")):
        raise InputError(f"{blend} is not a .blend file (it does not start with a Blender header); "
                         "is it corrupt or another format?")
    return overrides


def _ensure_addon():
    import bpy

    if not hasattr(bpy.types.Scene, "pbrfit"):
        sys.path.insert(0, str(ROOT / "blender_addon"))
        import pbrfit_blender

        pbrfit_blender.register()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        overrides = _preflight(args)
    except Exception as e:  # InputError: one line naming the file or option
        return _fail(e)
    import bpy

    blend = Path(args.blend)
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    except RuntimeError as e:  # Blender's own reason ("File format is not supported", ...)
        return _fail(f"{blend}: cannot open it: {str(e).removeprefix('Error: ').strip()}")
    _ensure_addon()
    if args.map_folder:
        bpy.context.scene.pbrfit.texture_storage = "FOLDER"
        bpy.context.scene.pbrfit.texture_folder = os.path.abspath(args.map_folder)
    if bpy.data.objects.get(args.object) is None:
        names = ", ".join(sorted(o.name for o in bpy.data.objects)[:20])
        return _fail(f"{blend}: no object '{args.object}'; objects: {names or 'none'}")
    try:
        bpy.ops.pbrfit.fit(object_name=args.object, options=json.dumps(overrides),
                           output_dir=os.path.abspath(args.out) if args.out else "",
                           copy_material=args.copy_material, synchronous=True)
    except RuntimeError as e:  # the operator reported an error: one line, already clear
        return _fail(str(e).removeprefix("Error: ").strip())
    except KeyboardInterrupt:
        return _fail("cancelled; nothing was written", 130)
    print(f"pbrfit: {bpy.context.scene.pbrfit.status}")
    if args.save:
        try:
            save_atomically(args.save)
        except (OSError, RuntimeError) as e:
            return _fail(f"cannot save {args.save}: {e}", 1)
        print(f"saved {args.save}")
    if args.out:
        print(f"wrote {os.path.abspath(args.out)}: material.json, material.mtlx, material.usda, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())  # inside `blender -b --python` SystemExit makes Blender exit with this status
