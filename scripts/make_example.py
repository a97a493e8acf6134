"""Build the bundled example in ``examples/demo/`` with real Blender/Cycles.

``python scripts/make_example.py [--out DIR]`` renders Suzanne in a glossy red-orange
plastic under Blender's bundled "forest" HDRI from 4 cameras (the training views) and under
"city" and "sunset" from 2 of them (the validation views), exports the stage with Blender's
default Principled BSDF as the initial guess, and writes ``spec.json`` (the same case, for
``scripts/cycles_reference.py``) and ``README.md``. The previous ``DIR`` is replaced only
when everything succeeded. Takes about 25 s on 2 CPU cores.

Colours are linear Rec.709; roughness is perceptual (GGX alpha = r**2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cycles_reference import render_case

from pbrfit.errors import PbrfitError

__all__ = ["DEMO_SPEC", "build_example", "main"]

ROOT = Path(__file__).resolve().parents[1]

#: The demo case; ``out`` is relative to the spec file, which lives in the demo folder.
DEMO_SPEC: dict = {
    "shape": "suzanne",
    "material": {"base_color": [0.6, 0.12, 0.05], "roughness": 0.3, "specular_ior_level": 0.5},
    "train_hdri": "forest",
    "validate_hdris": ["city", "sunset"],
    "cameras": 4,
    "validate_cameras": [0, 1],
    "resolution": [160, 160],
    "samples": 256,
    "seed": 0,
    "out": ".",
}


def _readme(spec: dict, result: dict) -> str:
    views = "\n".join(f"| `{r}` | {'train' if r.startswith('refs/' + spec['train_hdri']) else 'validate'} |"
                      for r in result["renders"])
    cams = ", ".join(f"`{p}`" for p in result["cameras"].values())
    return f"""# Demo: Suzanne in red-orange plastic, rendered by Cycles

A small, complete pbrfit case made with real Blender {result['blender']} / Cycles. The
renders are the "photographs"; the stage carries the part with Blender's *default*
Principled BSDF, so a fit has to recover the material below from the images alone.

Made with

    python scripts/make_example.py

which is the same as `python scripts/cycles_reference.py examples/demo/spec.json`
(see that script's docstring for every setting). Renders took {result['seconds']:.0f} s on 2 CPU cores.

## The truth (`truth.json`)

Shape `{spec['shape']}` (Blender's monkey, subdivided twice, triangulated, smooth shaded),
material in canonical pbrfit names (linear Rec.709, perceptual roughness), all other
Principled inputs at Blender's defaults:

```json
{json.dumps(spec['material'])}
```

## Files

| path | what |
|---|---|
| `scene.usda` | Blender's USD export: Z-up, metersPerUnit 1; mesh `{result['target']}`; cameras {cams}; DomeLight `/root/env_light` with `inputs:texture:file = @hdri/{spec['train_hdri']}.exr@` and `xformOp:rotateXYZ = (90, 0, 90)`; material `/root/_materials/PartMaterial` (UsdPreviewSurface + OpenPBR MaterialX), Blender's default Principled |
| `hdri/*.exr` | Blender's bundled studio HDRIs (CC0, by Greg Zaal / Poly Haven), 1024x512 |
| `refs/<hdri>/<camera>.exr` | Cycles renders, {spec['resolution'][0]}x{spec['resolution'][1]}, {spec['samples']} samples, linear Rec.709 RGBA float32, premultiplied, alpha = coverage |
| `job.toml` | the pbrfit job: training views under `{spec['train_hdri']}`, validation views under the others |
| `truth.json` | the material used for the renders, the initial material, the spec, the render settings |
| `spec.json` | the case for `scripts/cycles_reference.py` |

| image | split |
|---|---|
{views}
"""


#: fit settings appended to the demo's job file
DEMO_FIT = """
[fit]
preset = "plastic"     # base_color, roughness, specular_ior_level
"""


def build_example(out: Path = ROOT / "examples" / "demo", progress=None) -> dict:
    """Render the demo into a sibling temporary folder, then swap it in for ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    try:
        result = render_case({**DEMO_SPEC, "out": str(tmp)}, progress=progress)
        result["blender"] = json.loads((tmp / "truth.json").read_text())["render"]["blender"]
        (tmp / "spec.json").write_text(json.dumps(DEMO_SPEC, indent=2) + "\n")
        with open(tmp / "job.toml", "a") as job:  # the user knows the sample is a plastic
            job.write(DEMO_FIT)
        (tmp / "README.md").write_text(_readme(DEMO_SPEC, result))
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp/mkstemp make private modes
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "examples" / "demo"), help="folder to (re)create")
    args = ap.parse_args(argv)
    try:
        build_example(Path(args.out), progress=lambda m: print(m, file=sys.stderr, flush=True))
    except PbrfitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
