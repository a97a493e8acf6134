"""Fit an object's material in a .blend file, headless, with the pbrfit Blender add-on.

Runs with the PyPI ``bpy`` module or inside Blender::

    python scripts/blender_fit.py FILE.blend --object NAME [--save OUT.blend] [--out DIR]
                                  [--preset P | --parameters a,b] [--iterations N]
    blender -b --python scripts/blender_fit.py -- FILE.blend --object NAME ...

The photographs are the cameras' background images and the lighting is the World's
Environment Texture (see blender_addon/pbrfit_blender/extract.py). The fitted values are
written into the object's Principled BSDF (``--copy-material`` when other objects share
it), ``--save`` writes the .blend atomically (a temporary file beside it, then
``os.replace``), and ``--out`` gets the same material.json, material.mtlx, material.usda
and report.html as ``pbrfit fit``. The add-on is used as installed when it is registered
already (an installed extension), else from blender_addon/ next to this script.

Exit status: 0 done; 2 when the file/object is missing or the add-on reports an error (one
line on stderr: bad scene, shared material, missing dependency); 1 on a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["main", "parse_args", "save_atomically"]


def parse_args(argv=None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    ap = argparse.ArgumentParser(prog="blender_fit.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("blend", help="the .blend file")
    ap.add_argument("--object", required=True, help="name of the object whose material to fit")
    ap.add_argument("--save", help="write the updated .blend here (may be the input file)")
    ap.add_argument("--out", help="folder for material.json and report.html")
    ap.add_argument("--preset", default="", help="a pbrfit preset (plastic, metal, ...)")
    ap.add_argument("--parameters", default="", help="comma-separated canonical names (wins over --preset)")
    ap.add_argument("--iterations", type=int, default=-1, help="optimizer iterations (default: the file's setting)")
    ap.add_argument("--copy-material", action="store_true",
                    help="if other objects share the material, give this object its own copy")
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


def _ensure_addon():
    import bpy

    if not hasattr(bpy.types.Scene, "pbrfit"):
        sys.path.insert(0, str(ROOT / "blender_addon"))
        import pbrfit_blender

        pbrfit_blender.register()


def main(argv=None) -> int:
    args = parse_args(argv)
    import bpy

    blend = Path(args.blend)
    if not blend.is_file():
        print(f"error: {blend}: no such .blend file; check the path", file=sys.stderr)
        return 2
    bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    _ensure_addon()
    if bpy.data.objects.get(args.object) is None:
        names = ", ".join(sorted(o.name for o in bpy.data.objects)[:20])
        print(f"error: {blend}: no object '{args.object}'; objects: {names}", file=sys.stderr)
        return 2
    try:
        bpy.ops.pbrfit.fit(object_name=args.object, iterations=args.iterations, preset=args.preset,
                           parameters=args.parameters, output_dir=str(Path(args.out).resolve()) if args.out else "",
                           copy_material=args.copy_material, synchronous=True)
    except RuntimeError as e:  # the operator reported an error: one line, already clear
        print(f"error: {str(e).removeprefix('Error: ').strip()}", file=sys.stderr)
        return 2
    print(f"pbrfit: {bpy.context.scene.pbrfit.status}")
    if args.save:
        save_atomically(args.save)
        print(f"saved {args.save}")
    if args.out:
        print(f"wrote {Path(args.out) / 'material.json'} and report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())  # inside `blender -b --python` SystemExit makes Blender exit with this status
