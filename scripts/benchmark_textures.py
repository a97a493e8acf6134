"""Texture-map benchmark: fit textured Cycles-rendered parts, judge the maps by Cycles re-renders.

Cases (a UV sphere, 64x32, Blender's own UV layout; truth maps made here with numpy, 256x256,
loaded by Image Texture nodes, Linear interpolation, Repeat extension, the mesh's UV map):

* ``label_plastic``: red plastic, roughness 0.35, with a printed label (a white band with a
  blue stripe) and a yellow stripe all around: a base colour map (linear EXR, colour space
  "Linear Rec.709"). Fitted with ``--preset plastic`` and ``maps = ["base_color"]``.
* ``worn_metal``: grey metal (metallic 1, roughness 0.2) with worn patches of paint
  (metallic 0, roughness 0.6): roughness and metallic maps (EXR, "Non-Color"). The base
  colour is one scalar everywhere (metal and paint alike) and is fitted as a scalar;
  ``--preset metal``, ``maps = ["roughness", "metallic"]``.
* ``embossed_panel``: grey-blue plastic, roughness 0.3, embossed with raised rounded
  rectangles (10 around, 6 rows; the polar caps flat): a tangent-space normal map (EXR,
  "Non-Color", through a Normal Map node: space Tangent, the UV map, strength 1).
  ``--preset plastic``, ``maps = ["normal"]``.
* ``woven_fabric``: a plain weave (16 x 16 cells, navy warp over ochre weft and under it
  by turns), roughness 0.7, a plain dielectric: base colour and normal maps (the threads'
  bumps). ``--preset plastic``, ``maps = ["base_color", "normal"]``.

Truth normal maps are a height field's normals in texel space (n = normalize(-k dh/dx,
-k dh/dy, 1), x along u, y along v, so curl-free as pbrfit's prior assumes), encoded
c = (n + 1) / 2, OpenGL convention (+Y along increasing v), scaled so the steepest normal
tilts 30 degrees from flat (steeper ones are known to differ between pbrfit and Cycles).

For each case:

1. Cycles renders the truth (scripts/cycles_reference.py's :func:`render_case`, with the
   truth material's Principled BSDF fed by the Image Texture nodes) from 6 cameras: 4 train
   cameras (azimuth 30 + 90 i, elevation +20 / -10) and 2 *novel* ones (azimuth 75,
   elevation 45; azimuth 255, elevation -35) that no train view uses; under the train HDRI
   (forest) and under city, courtyard and sunset. Cached by spec and truth maps.
2. ``pbrfit fit`` (a subprocess; its wall time and peak RSS, children included, via
   ``os.wait4``) fits a job with the 4 train views under forest and, as the fit's own
   validation, the 2 novel cameras under city, and a ``[textures]`` table.
3. Judge: the written material (material.json's scalars, and ``textures/*.exr`` wired by the
   Blender add-on's write-back, :func:`pbrfit_blender.writeback.apply_material`: Image
   Texture nodes on the same UV map, a normal map through a Normal Map node; the truth
   references use this script's own nodes) is rendered by Cycles (another seed) under
   courtyard and sunset, which the fit never saw, from all 6 cameras, and compared with the
   references: CIEDE2000 per pixel (pbrfit's own metric, radiance divided by the HDRI's
   white, as benchmark_fit.py does), pixels one pixel inside both alpha masks; mean and
   p95 over the pooled pixels, split by train and novel cameras, and the mean over 4x4
   blocks. The truth material through the same judge (another seed) is Cycles' noise floor.
   The same judge again on the fit's ``material.usda`` as Blender's own USD importer reads it
   (UsdPreviewSurface into a Principled BSDF, the maps as Image Texture nodes): *via USD*.
4. Map errors over the texels the fit says it observed (``textures/<name>_observed.png``):
   PSNR of the base colour (linear values, peak 1), RMSE of roughness and metallic, the mean
   angle (degrees) between the fitted and the truth normals (the truth's decoded normals
   resampled as below, then renormalized; *flat* for a normal map: the flat map (0, 0, 1)). The
   256x256 truth is brought to the fitted resolution by exact area averaging
   (:func:`pbrfit.images.area_downsample`) when the fit is coarser, bilinearly (texel
   centres aligned) when finer. *flat*: the same error for the best flat map (the truth's
   mean over the observed texels), the error a scalar fit cannot go below.

Usage::

    python scripts/benchmark_textures.py [--out out/benchmark_textures] [--cases label_plastic,worn_metal,...]
        [--resolution 128] [--iterations 160] [--cache DIR] [--publish] [--rejudge] [--references-only]

Writes ``OUT/textures.json`` and ``OUT/textures.md`` (with ``--publish`` also copied to
``benchmarks/``). Rendering runs in subprocesses of this script (``--render REQUEST``);
bpy and the fit never share a process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchmark_fit import _eroded, _param_errors
from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parent.parent
TRAIN_HDRI = "forest"
FIT_VALIDATE_HDRI = "city"          # the fit's own validation (novel cameras only)
JUDGE_HDRIS = ["courtyard", "sunset"]  # never seen by the fit
TRAIN_CAMERAS = [{"name": f"Cam{i}", "azimuth": 30.0 + 90.0 * i, "elevation": 20.0 if i % 2 == 0 else -10.0}
                 for i in range(4)]
NOVEL_CAMERAS = [{"name": "Novel0", "azimuth": 75.0, "elevation": 45.0},
                 {"name": "Novel1", "azimuth": 255.0, "elevation": -35.0}]
CAMERAS = TRAIN_CAMERAS + NOVEL_CAMERAS
TRUTH_RESOLUTION = 256
JUDGE_SEED = 7
#: Blender colour space of each map's image
COLORSPACE = {"base_color": "Linear Rec.709"}  # the rest: "Non-Color"
#: the sphere's UV map in Blender (the stage's "st" primvar)
UV_MAP = "UVMap"
#: the truth normal maps' steepest tilt from flat (degrees)
MAX_TILT_DEG = 30.0


# --- the truth maps (row 0 = top of the image = v 1; u 0 at the left) ------------------------

def _uv_grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(res) + 0.5) / res
    u, v = np.meshgrid(c, c[::-1])  # row 0 is v near 1
    return u, v


def label_plastic_maps(res: int = TRUTH_RESOLUTION) -> dict[str, np.ndarray]:
    u, v = _uv_grid(res)
    img = np.empty((res, res, 3), np.float32)
    img[:] = (0.55, 0.04, 0.03)                                       # red plastic
    label = (u >= 0.05) & (u < 0.45) & (v >= 0.36) & (v < 0.64)       # the printed label
    img[label] = (0.80, 0.80, 0.78)
    img[label & (u >= 0.08) & (u < 0.42) & (v >= 0.46) & (v < 0.54)] = (0.03, 0.08, 0.45)  # blue stripe
    img[(v >= 0.22) & (v < 0.26)] = (0.80, 0.60, 0.05)               # a yellow stripe all around
    return {"base_color": img}


def worn_metal_maps(res: int = TRUTH_RESOLUTION) -> dict[str, np.ndarray]:
    u, v = _uv_grid(res)
    rng = np.random.default_rng(3)
    paint = np.zeros((res, res), bool)
    for _ in range(9):  # worn patches: ellipses (wrapping in u), about round on the sphere's middle
        cu, cv = rng.uniform(0, 1), rng.uniform(0.25, 0.75)
        ru = rng.uniform(0.04, 0.09)
        rv = 2.0 * ru * rng.uniform(0.7, 1.3)  # v spans half the circumference u spans
        du = (u - cu + 0.5) % 1.0 - 0.5
        wobble = 1.0 + 0.08 * np.sin(5 * np.arctan2((v - cv) / rv, du / ru) + rng.uniform(0, 6.3))
        paint |= (du / ru) ** 2 + ((v - cv) / rv) ** 2 < wobble ** 2
    metallic = np.where(paint, 0.0, 1.0).astype(np.float32)
    roughness = np.where(paint, 0.6, 0.2).astype(np.float32)
    return {"roughness": roughness, "metallic": metallic}


def _encoded_normals(height, res: int, max_tilt_deg: float = MAX_TILT_DEG) -> np.ndarray:
    """The tangent-space normal map (res, res, 3), encoded c = (n + 1) / 2, of the height
    field ``height(x, y)`` (x = u res, y = v res: texel units, v up), scaled so its steepest
    normal tilts ``max_tilt_deg`` from flat: n = normalize(-k dh/dx, -k dh/dy, 1) (OpenGL:
    +Y along increasing v), a height field's normals in texel space (curl-free)."""
    u, v = _uv_grid(res)
    x, y, e = u * res, v * res, 1e-3
    p = -(height(x + e, y) - height(x - e, y)) / (2 * e)
    q = -(height(x, y + e) - height(x, y - e)) / (2 * e)
    k = np.tan(np.radians(max_tilt_deg)) / np.hypot(p, q).max()
    n = np.stack([k * p, k * q, np.ones_like(p)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return ((n + 1) / 2).astype(np.float32)


def embossed_panel_maps(res: int = TRUTH_RESOLUTION) -> dict[str, np.ndarray]:
    """Raised rounded rectangles, 10 around (u) by 8 rows (v; the two polar rows flat): a
    cosine ramp 6/256 of the map wide inside each rectangle's edge (its signed distance),
    flat plateaus between, every ramp as steep (MAX_TILT_DEG at its middle)."""
    cw, ch = res / 10, res / 8
    margin, ramp, corner = 2 * res / 256, 6 * res / 256, 6 * res / 256
    bx, by = cw / 2 - margin, ch / 2 - margin

    def height(x, y):
        cx, cy = x % cw - cw / 2, y % ch - ch / 2
        qx, qy = np.abs(cx) - bx + corner, np.abs(cy) - by + corner
        d = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - corner
        h = 0.5 - 0.5 * np.cos(np.pi * np.clip(-d / ramp, 0.0, 1.0))
        row = np.floor(y / ch)
        return np.where((row >= 1) & (row <= 6), h, 0.0)

    return {"normal": _encoded_normals(height, res)}


def woven_fabric_maps(res: int = TRUTH_RESOLUTION) -> dict[str, np.ndarray]:
    """A plain weave, 16 x 16 cells: warp threads (navy) along v in each column, weft threads
    (ochre) along u in each row, each going over and under the other from cell to cell
    (cos-profile threads whose crown rises and dips smoothly along them; the height is the
    upper thread's). Base colour: the upper thread's; normal map: the height field's,
    faded to flat near the poles (v < 0.06, v > 0.94)."""
    cell = res / 16

    def threads(x, y):
        gx, gy = x / cell, y / cell
        i, j = np.floor(gx), np.floor(gy)
        fx, fy = gx - i - 0.5, gy - j - 0.5
        up_warp = 0.5 + 0.5 * np.cos(np.pi * (gy - 0.5) + np.pi * i)   # 1 at cells with i + j even
        up_weft = 0.5 - 0.5 * np.cos(np.pi * (gx - 0.5) + np.pi * j)   # 1 at cells with i + j odd
        return np.cos(np.pi * fx) * (0.3 + 0.7 * up_warp), np.cos(np.pi * fy) * (0.3 + 0.7 * up_weft)

    def smoothstep(a, b, t):
        t = np.clip((t - a) / (b - a), 0.0, 1.0)
        return t * t * (3 - 2 * t)

    def height(x, y):
        v = y / res
        return np.maximum(*threads(x, y)) * smoothstep(0.06, 0.12, v) * smoothstep(0.06, 0.12, 1 - v)

    u, v = _uv_grid(res)
    warp, weft = threads(u * res, v * res)
    img = np.where((warp >= weft)[..., None], np.float32([0.06, 0.10, 0.32]), np.float32([0.62, 0.50, 0.28]))
    return {"base_color": img.astype(np.float32), "normal": _encoded_normals(height, res)}


CASES = {
    "label_plastic": {"material": {"base_color": [0.55, 0.04, 0.03], "roughness": 0.35},
                      "maps": label_plastic_maps, "preset": "plastic"},
    "worn_metal": {"material": {"base_color": [0.45, 0.45, 0.46], "metallic": 1.0, "roughness": 0.2},
                   "maps": worn_metal_maps, "preset": "metal"},
    "embossed_panel": {"material": {"base_color": [0.20, 0.27, 0.36], "roughness": 0.3},
                       "maps": embossed_panel_maps, "preset": "plastic"},
    "woven_fabric": {"material": {"base_color": [0.34, 0.30, 0.30], "roughness": 0.7},
                     "maps": woven_fabric_maps, "preset": "plastic"},
}


# --- rendering (a subprocess: python benchmark_textures.py --render REQUEST.json) ------------

def _attach_textures(mat, textures: dict[str, str]) -> None:
    """Feed the Principled BSDF's sockets from Image Texture nodes on the mesh's UV map (the
    truth references' own nodes, independent of the add-on): a normal map through a Normal
    Map node (tangent space, the UV map, strength 1) into "Normal"."""
    import bpy
    from cycles_reference import SOCKETS

    nt = mat.node_tree
    principled = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    uvmap = nt.nodes.new("ShaderNodeUVMap")
    uvmap.uv_map = UV_MAP
    for name, path in textures.items():
        image = bpy.data.images.load(path)
        image.colorspace_settings.name = COLORSPACE.get(name, "Non-Color")
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image, tex.interpolation, tex.extension = image, "Linear", "REPEAT"
        nt.links.new(uvmap.outputs["UV"], tex.inputs["Vector"])
        if name == "normal":
            decode = nt.nodes.new("ShaderNodeNormalMap")
            decode.space, decode.uv_map = "TANGENT", UV_MAP
            decode.inputs["Strength"].default_value = 1.0
            nt.links.new(tex.outputs["Color"], decode.inputs["Color"])
            nt.links.new(decode.outputs["Normal"], principled.inputs["Normal"])
        else:
            nt.links.new(tex.outputs["Color"], principled.inputs[SOCKETS[name]])


def _write_back(part, textures: dict[str, str]) -> None:
    """The maps wired by the Blender add-on's write-back (what users get):
    :func:`pbrfit_blender.writeback.apply_material` with each file's texels as a
    :class:`pbrfit.texture_fit.MapResult` on the mesh's UV map."""
    sys.path.insert(0, str(ROOT / "blender_addon"))
    from pbrfit.texture_fit import MapResult
    from pbrfit.textures import map_channels
    from pbrfit_blender.writeback import apply_material

    maps = {}
    for name, path in textures.items():
        texels = _read_pixels(Path(path))[..., : map_channels(name)]
        seen = np.ones(texels.shape[:2], bool)
        maps[name] = MapResult(name, texels, seen, seen.astype(np.float32), UV_MAP)
    apply_material(part, {}, maps=maps)


def _usd_material(part, usd_path: str) -> None:
    """The fit's ``material.usda`` as a user's Blender reads it: Blender's own USD importer
    (UsdPreviewSurface into a Principled BSDF, UsdUVTexture into Image Texture nodes), the
    imported material on the part. The part's UV map takes the name the material's primvar
    reader asks for (``st``), as a mesh imported from the same stage has it."""
    import bpy

    before = set(bpy.data.materials)
    bpy.ops.wm.usd_import(filepath=usd_path, import_all_materials=True, import_meshes=False, import_cameras=False,
                          import_lights=False, create_world_material=False)
    mat = next(m for m in bpy.data.materials if m not in before and m.node_tree is not None
               and any(n.bl_idname == "ShaderNodeBsdfPrincipled" for n in m.node_tree.nodes))
    names = {n.uv_map for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeUVMap" and n.uv_map}
    if len(names) == 1:
        part.data.uv_layers.active.name = names.pop()
    part.data.materials.clear()
    part.data.materials.append(mat)


def _render_worker(request: Path) -> int:
    """Render a cycles_reference spec whose truth material has texture maps: the benchmark's
    own nodes (references), the add-on's write-back (``"writeback": true``: the judge), or the
    fit's material.usda through Blender's USD importer (``"writeback": "usd"``)."""
    import cycles_reference as cr

    req = json.loads(request.read_text())
    if req.get("writeback") == "usd":
        bounding_sphere = cr._bounding_sphere

        def imported(part):
            _usd_material(part, req["textures"]["usd"])
            return bounding_sphere(part)

        cr._bounding_sphere = imported
    elif req.get("writeback"):
        bounding_sphere = cr._bounding_sphere

        def wired(part):  # called once, right after the truth material is assigned to the part
            _write_back(part, req["textures"])
            return bounding_sphere(part)

        cr._bounding_sphere = wired
    else:
        plain = cr._new_material

        def textured(name, values):  # render_case's truth material; the exported one stays plain
            mat = plain(name, values)
            if name == "ReferenceTruth":
                _attach_textures(mat, req["textures"])
            return mat

        cr._new_material = textured
    result = cr.render_case(req["spec"], progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"seconds": result["seconds"], "renders": len(result["renders"])}))
    return 0


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _render(spec: dict, textures: dict[str, str], key_extra: dict, folder: Path, label: str,
            writeback: bool | str = False) -> tuple[Path, float]:
    """Render (or reuse) a textured case under ``folder``; returns its directory and seconds spent."""
    wiring = {"wiring": "usd"} if writeback == "usd" else {"wiring": "writeback"} if writeback else {}
    key = _hash({"spec": spec, "textures": key_extra} | wiring)
    out = (folder / f"{label}-{key}").resolve()
    if (out / "job.toml").is_file() and (out / "truth.json").is_file():
        return out, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / f"{label}-{key}.json"
    request.write_text(json.dumps({"spec": dict(spec, out=str(out)), "textures": textures, "writeback": writeback},
                                  indent=1))
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--render", str(request)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"Cycles render ({label}) failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return out, time.monotonic() - t


def _spec(material: dict, args, *, train: str, validate: list[str], seed: int) -> dict:
    return {"shape": "sphere", "material": material, "train_hdri": train, "validate_hdris": validate,
            "cameras": CAMERAS, "resolution": [args.render_resolution] * 2, "samples": args.samples, "seed": seed}


# --- the fit ---------------------------------------------------------------------------------

def _q(s) -> str:
    return json.dumps(str(s))


def _write_job(path: Path, ref: Path, maps: list[str], args) -> None:
    """The fit's job: the 4 train cameras under the train HDRI (and under each of
    ``--extra-train-hdris``), the 2 novel ones under city."""
    import tomllib

    ref_job = tomllib.loads((ref / "job.toml").read_text())
    train_cams, novel_cams = {c["name"] for c in TRAIN_CAMERAS}, {c["name"] for c in NOVEL_CAMERAS}
    views = []
    for v in ref_job["views"]:
        hdri, cam = Path(v["image"]).parts[-2], Path(v["image"]).stem
        extra = hdri in args.extra_train_hdris and cam in train_cams
        train = (hdri == TRAIN_HDRI and cam in train_cams) or extra
        val = hdri == FIT_VALIDATE_HDRI and cam in novel_cams
        if train or val:
            view = {"camera": v["camera"], "image": str(ref / v["image"])}
            if val or extra:
                view["environment"] = str(ref / v["environment"])
            if val:
                view["split"] = "validate"
            views.append(view)
    lines = ["# written by scripts/benchmark_textures.py", f"scene = {_q(ref / 'scene.usda')}",
             f"target = {_q(ref_job['target'])}", "", "[textures]",
             f"maps = [{', '.join(_q(m) for m in maps)}]", f"resolution = {args.resolution}", 'uv = "st"',
             f"iterations = {args.iterations}"]
    for view in views:
        lines += ["", "[[views]]"] + [f"{k} = {_q(val)}" for k, val in view.items()]
    path.write_text("\n".join(lines) + "\n")


def _run_fit(job: Path, out: Path, preset: str, args) -> dict:
    """``pbrfit fit`` in a subprocess: its wall time and peak resident memory (KiB -> MiB)."""
    cmd = [str(Path(sys.executable).parent / "pbrfit"), "fit", str(job), "--out", str(out), "--preset", preset,
           "--backend", args.backend, "--iterations", str(args.scalar_iterations), "--quiet"]
    log = out.parent / "fit.log"
    with open(log, "w") as f:
        t = time.monotonic()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"pbrfit fit exited {p.returncode}; see {log}:\n{log.read_text()[-4000:]}")
    return {"command": " ".join(cmd), "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0}


# --- map errors ------------------------------------------------------------------------------

def _read_pixels(path: Path) -> np.ndarray:
    import OpenImageIO as oiio

    buf = oiio.ImageBuf(str(path))
    px = buf.get_pixels(oiio.FLOAT)
    if px is None or buf.has_error:
        raise RuntimeError(f"cannot read {path}: {buf.geterror()}")
    return np.asarray(px, np.float32).reshape(buf.spec().height, buf.spec().width, -1)


def _resample(truth: np.ndarray, res: int) -> np.ndarray:
    """(H, W, C) truth at res x res: area average when shrinking, bilinear when growing."""
    import torch
    import torch.nn.functional as F

    from pbrfit.images import area_downsample

    if res <= truth.shape[0]:
        return area_downsample(truth, res, res)
    t = torch.as_tensor(truth).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


#: texels seen by at least this many train pixels (the sum of their bilinear weights over the
#: train views, :func:`pbrfit.textures.texel_weights`, as the fit counts them: with
#: ``--extra-train-hdris`` a camera's pixels count once per lighting) are *well seen*: a map's error is also
#: given over those alone (grazing views and the sphere's high latitudes see texels through
#: pixels wider than a texel, which determine only their average with their neighbours)
WELL_SEEN_PIXELS = 4.0


def _fit_views(job: Path) -> list[tuple[str, str, object, np.ndarray]]:
    """The fit ``job``'s views as pbrfit sees them, prepared once for the judge's splits:
    ``(name, split, geometry, train pixels)`` each (:class:`pbrfit.gbuffer.ViewGeometry`;
    the covered pixels the fit trains on, every one)."""
    from pbrfit.job import load_job
    from pbrfit.render import RasterRenderer

    scene = load_job(job).scene
    renderer = RasterRenderer(scene, max_loss_pixels=1 << 40)
    return [(view.name, view.split, renderer.prepare(vi).geometry, renderer.train_subsets[vi])
            for vi, view in enumerate(scene.views)]


def _texel_weights(views: list, resolution: int) -> np.ndarray:
    """(resolution, resolution) how much the train pixels of the fit's ``views``
    (:func:`_fit_views`) see each texel (:func:`pbrfit.textures.texel_weights`, as the fit counts them)."""
    from pbrfit.textures import texel_weights

    return texel_weights([geo.uv[rows] for _, split, geo, rows in views if split == "train"], resolution).numpy()


def _map_errors(fit_dir: Path, doc: dict, truth_maps: dict[str, np.ndarray], views: list | None = None) -> dict:
    """Each fitted map's error against the truth over the texels the fit marks observed; with
    the fit's ``views`` (:func:`_fit_views`), also over the well-seen ones alone (``well_seen``,
    :data:`WELL_SEEN_PIXELS`)."""
    out = {}
    weights = {}
    for name, entry in doc["textures"].items():
        fitted = _read_pixels(fit_dir / entry["file"])
        observed = _read_pixels(fit_dir / entry["file"].replace(".exr", "_observed.png"))[..., 0] > 0.5
        e = _map_error(name, fitted, observed, truth_maps[name])
        if views is not None:
            res = int(fitted.shape[0])
            if res not in weights:
                weights[res] = _texel_weights(views, res)
            well = observed & (weights[res] >= WELL_SEEN_PIXELS)
            e["well_seen"] = (dict(_map_error(name, fitted, well, truth_maps[name]),
                                   share=float(well.sum() / observed.sum())) if well.any() else None)
        out[name] = e
    return out


def _map_error(name: str, fitted: np.ndarray, observed: np.ndarray, truth: np.ndarray) -> dict:
    """One map's error over the texels ``observed``: base colour PSNR, normal mean angle,
    otherwise RMSE, each beside the best flat map's."""
    e = {"observed_share": float(observed.mean()), "resolution": int(fitted.shape[0])}
    if name == "normal":  # angles between decoded unit normals; the truth's normals resampled, renormalized
        t = _unit(_resample(truth * 2.0 - 1.0, fitted.shape[0]))[observed]
        f = _unit(fitted[..., :3] * 2.0 - 1.0)[observed]
        angle = np.degrees(np.arccos(np.clip((t * f).sum(-1), -1.0, 1.0)))
        flat = np.degrees(np.arccos(np.clip(t[:, 2], -1.0, 1.0)))  # the flat map (0, 0, 1)
        e.update(mean_angle_deg=float(angle.mean()), p95_angle_deg=float(np.percentile(angle, 95)),
                 flat_mean_angle_deg=float(flat.mean()))
        return e
    truth = _resample(truth if truth.ndim == 3 else truth[..., None], fitted.shape[0])
    fitted = fitted[..., : truth.shape[-1]]
    t, f = truth[observed].astype(np.float64), fitted[observed].astype(np.float64)
    flat = t.mean(0, keepdims=True)
    mse, mse_flat = float(((f - t) ** 2).mean()), float(((flat - t) ** 2).mean())
    if name == "base_color":
        e.update(psnr_db=float(10 * np.log10(1.0 / max(mse, 1e-12))),
                 flat_psnr_db=float(10 * np.log10(1.0 / max(mse_flat, 1e-12))))
    else:
        e.update(rmse=mse ** 0.5, flat_rmse=mse_flat ** 0.5)
    return e


# --- the judge -------------------------------------------------------------------------------

def _observed_pixels(views: list, fit_dir: Path, doc: dict) -> dict[str, np.ndarray]:
    """Per camera (the fit's ``views``, :func:`_fit_views`, by name), the (H, W) pixels of the
    part whose texels the fit saw: the bilinear lookup (:func:`pbrfit.textures.lookup`, the
    fit's own convention) of the maps' observed masks (``<map>_observed.png``, all maps at
    once) at the pixel's UV reads over 0.5. The rest show texels no train view saw, which the
    fit filled from their neighbours: no fit can know what is there (a weave's colour, say)."""
    import torch

    from pbrfit.textures import lookup

    seen = None
    for entry in doc["textures"].values():
        m = _read_pixels(fit_dir / entry["file"].replace(".exr", "_observed.png"))[..., 0] > 0.5
        seen = m if seen is None else seen & m
    texels = torch.as_tensor(seen, dtype=torch.float32)[..., None]
    out = {}
    for name, _, geo, _ in views:
        on = np.zeros(geo.height * geo.width, bool)
        on[np.asarray(geo.pixels)] = lookup(texels, geo.uv)[:, 0].numpy() > 0.5
        out[name] = on.reshape(geo.height, geo.width)
    return out


def _judge(render_dir: Path, ref_dir: Path, observed: dict[str, np.ndarray] | None = None) -> dict:
    """ΔE2000 of ``render_dir``'s images against the references under JUDGE_HDRIS, all 6
    cameras: per-pixel pooled mean and p95 (all, train cameras, novel cameras) and the mean
    over 4x4-pixel blocks entirely inside both masks (as benchmark_fit.py's judge). With
    ``observed`` (:func:`_observed_pixels`), the same pools split into the pixels on texels
    the fit saw and the rest (``observed_texels``, ``unobserved_texels``; with each pool's
    share of the group's pixels)."""
    import torch

    from pbrfit import losses as L
    from pbrfit.color import environment_white
    from pbrfit.images import read_environment, read_image

    pooled = {"train_cameras": [], "novel_cameras": []}
    split = {k: {"train_cameras": [], "novel_cameras": []} for k in ("observed_texels", "unobserved_texels")}
    blocks4, views = [], {}
    for hdri in JUDGE_HDRIS:
        white = environment_white(read_environment(ref_dir / "hdri" / f"{hdri}.exr"))
        for cam in CAMERAS:
            rel = Path("refs") / hdri / f"{cam['name']}.exr"
            ref, ref_alpha = read_image(ref_dir / rel)
            img, alpha = read_image(render_dir / rel)
            inside = _eroded(ref_alpha >= 0.99) & _eroded(alpha >= 0.99)
            de_map = L.de2000_map(torch.as_tensor(img), torch.as_tensor(ref), white).numpy()
            de = de_map[inside]
            group = "novel_cameras" if cam in NOVEL_CAMERAS else "train_cameras"
            pooled[group].append(de)
            if observed is not None:
                on = observed[cam["name"]]
                if on.shape != inside.shape:
                    raise RuntimeError(f"{rel}: {inside.shape} px, the fit's view {on.shape}")
                split["observed_texels"][group].append(de_map[inside & on])
                split["unobserved_texels"][group].append(de_map[inside & ~on])
            h, w = (inside.shape[0] // 4) * 4, (inside.shape[1] // 4) * 4

            def blocks(a, h=h, w=w):
                return a[:h, :w].reshape(h // 4, 4, w // 4, 4, *a.shape[2:]).mean((1, 3))

            full = blocks(inside.astype(np.float64)) > 0.999
            b = float(L.de2000(torch.as_tensor(blocks(img)[full]), torch.as_tensor(blocks(ref)[full]), white=white))
            blocks4.append(b)
            views[f"{hdri}/{cam['name']}"] = {"mean": float(de.mean()), "p95": float(np.percentile(de, 95)),
                                              "block4": b}

    def stats(arrays, of=None):
        a = np.concatenate(arrays)
        if not a.size:
            return {"mean": None, "p95": None, "pixels": 0, "share": 0.0}
        out = {"mean": float(a.mean()), "p95": float(np.percentile(a, 95)), "pixels": int(a.size)}
        if of is not None:
            out["share"] = a.size / sum(x.size for x in of)
        return out

    result = {"all": stats(pooled["train_cameras"] + pooled["novel_cameras"]),
              "train_cameras": stats(pooled["train_cameras"]), "novel_cameras": stats(pooled["novel_cameras"]),
              "block4_mean": float(np.mean(blocks4)), "views": views}
    if observed is not None:
        for key, pools in split.items():
            result[key] = {"all": stats(pools["train_cameras"] + pools["novel_cameras"],
                                        pooled["train_cameras"] + pooled["novel_cameras"]),
                           **{g: stats(pools[g], pooled[g]) for g in pools}}
    return result


def _judge_render(material: dict, textures: dict[str, str], key_extra: dict, cache: Path, label: str, args,
                  wiring: bool | str = True):
    spec = _spec(material, args, train=JUDGE_HDRIS[0], validate=JUDGE_HDRIS[1:], seed=JUDGE_SEED)
    return _render(spec, textures, key_extra, cache / "judge", label, writeback=wiring)


# --- a case ----------------------------------------------------------------------------------

def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_case(name: str, args, out: Path, cache: Path) -> dict:
    from pbrfit.images import write_exr
    from pbrfit.params import default_material

    case = CASES[name]
    truth_maps = case["maps"]()
    tdir = cache / "truth_maps" / name
    tdir.mkdir(parents=True, exist_ok=True)
    truth_files, truth_key = {}, {}
    for m, a in truth_maps.items():
        write_exr(tdir / f"{m}.exr", a)
        truth_files[m] = str((tdir / f"{m}.exr").resolve())
        truth_key[m] = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
    timings = {}

    spec = _spec(case["material"], args, train=TRAIN_HDRI, validate=[FIT_VALIDATE_HDRI, *JUDGE_HDRIS], seed=0)
    ref, timings["references_s"] = _render(spec, truth_files, truth_key, cache, name)
    print(f"[{name}] references: {ref} ({timings['references_s']:.0f} s)", file=sys.stderr, flush=True)
    if args.references_only:
        floor_render, timings["floor_s"] = _judge_render(case["material"], truth_files, truth_key, cache,
                                                         f"{name}-truth", args)
        print(f"[{name}] noise floor: {floor_render} ({timings['floor_s']:.0f} s)", file=sys.stderr, flush=True)
        return {"case": name, "references_only": True, "timings": timings}

    case_out = out / name
    case_out.mkdir(parents=True, exist_ok=True)
    job = case_out / "job.toml"
    maps = list(truth_maps)
    previous = _previous_rows(out).get(name) if args.rejudge else None
    if previous is not None and (case_out / "fit" / "material.json").is_file():
        fit = {"command": previous["fit_command"], "wall_s": previous["fit_wall_s"],
               "peak_rss_mib": previous["fit_peak_rss_mib"]}  # the fit as it ran; judged again
    else:
        _write_job(job, ref, maps, args)
        fit = _run_fit(job, case_out / "fit", case["preset"], args)
    print(f"[{name}] fit: {fit['wall_s']:.0f} s, {fit['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    fit_dir = case_out / "fit"
    doc = json.loads((fit_dir / "material.json").read_text())

    fitted_files = {m: str((fit_dir / e["file"]).resolve()) for m, e in doc["textures"].items()}
    t = time.monotonic()
    fit_render, _ = _judge_render(doc["parameters"], fitted_files, {m: _file_hash(p) for m, p in fitted_files.items()},
                                  cache, f"{name}-fit", args)
    floor_render, _ = _judge_render(case["material"], truth_files, truth_key, cache, f"{name}-truth", args)
    usd = fit_dir / "material.usda"
    usd_render, _ = _judge_render(doc["parameters"], {"usd": str(usd.resolve())},
                                  {"usd": _file_hash(usd)} | {m: _file_hash(p) for m, p in fitted_files.items()},
                                  cache, f"{name}-usd", args, wiring="usd")
    timings["judge_renders_s"] = time.monotonic() - t
    views = _fit_views(job)  # the fit's 4 train and 2 novel cameras, as the judge's
    observed = _observed_pixels(views, fit_dir, doc)  # the floor split the same way, to compare
    judged, floor = _judge(fit_render, ref, observed), _judge(floor_render, ref, observed)
    judged_usd = _judge(usd_render, ref, observed)
    print(f"[{name}] judged ΔE {judged['all']['mean']:.2f} (floor {floor['all']['mean']:.2f})", file=sys.stderr,
          flush=True)

    truth = default_material() | case["material"]
    scalars = [n for n in doc["fitted"] if n not in doc["textures"]]
    own = doc.get("metrics") or {}
    return {"case": name, "preset": case["preset"], "maps": maps, "map_resolution": args.resolution,
            "truth_map_resolution": TRUTH_RESOLUTION, "texture_iterations": args.iterations,
            "judge": judged, "judge_usd": judged_usd, "floor": floor, "map_errors": _map_errors(fit_dir, doc, truth_maps, views),
            "scalar_errors": _param_errors(truth, doc["parameters"], scalars),
            "scalars_fitted": {n: doc["parameters"][n] for n in scalars},
            "fit_own_de2000": {s: (own.get(s) or {}).get("mean", {}).get("de2000_mean") for s in ("train", "validate")},
            "texture_levels": doc.get("texture_levels"), "stopped": doc.get("stopped"),
            "fit_wall_s": fit["wall_s"], "fit_peak_rss_mib": fit["peak_rss_mib"], "fit_command": fit["command"],
            "timings": timings, "references": os.path.relpath(ref, out), "fit_dir": os.path.relpath(fit_dir, out)}


def _previous_rows(out: Path) -> dict[str, dict]:
    """The rows of ``OUT/textures.json`` from an earlier run, by case (``--rejudge``)."""
    path = out / "textures.json"
    if not path.is_file():
        return {}
    return {r["case"]: r for r in json.loads(path.read_text())["rows"] if "error" not in r}


# --- the table -------------------------------------------------------------------------------

def _usd_cell(row: dict) -> str:
    u = row.get("judge_usd")
    return "-" if u is None else f"{u['all']['mean']:.2f} / {u['all']['p95']:.2f} ({u['block4_mean']:.2f})"


def _seen_cell(judged: dict) -> str:
    seen, unseen = judged.get("observed_texels"), judged.get("unobserved_texels")
    if seen is None:
        return "-"
    return (f"{seen['all']['mean'] or float('nan'):.2f} / {seen['novel_cameras']['mean'] or float('nan'):.2f} "
            f"({unseen['novel_cameras']['share']:.0%}: {unseen['novel_cameras']['mean'] or float('nan'):.1f})")


#: how the table writes each map error: (its key in ``map_errors``, its name, its value)
MAP_METRICS = (("psnr_db", "PSNR", "{:.1f} dB"), ("mean_angle_deg", "angle", "{:.1f}°"), ("rmse", "RMSE", "{:.3f}"))


def write_table(rows: list[dict], out: Path, args) -> str:
    judged_seen = bool(set(args.extra_train_hdris) & set(JUDGE_HDRIS))
    lines = [
        f"Machine: {describe_machine()}. Sphere (UV 64x32), truth maps {TRUTH_RESOLUTION}x{TRUTH_RESOLUTION} in "
        f"Cycles Image Texture nodes (normal maps: tangent space on the UV map through a Normal Map node, steepest "
        f"tilt {MAX_TILT_DEG:.0f}°); references: Cycles CPU, {args.render_resolution}x{args.render_resolution} px, "
        f"{args.samples} samples. Fit: `pbrfit fit --backend {args.backend} --iterations {args.scalar_iterations}`, "
        f"[textures] resolution {args.resolution}, {args.iterations} iterations; 4 train views under "
        f"{' and under '.join([TRAIN_HDRI, *args.extra_train_hdris])}, the fit's own validation: 2 novel cameras "
        f"under {FIT_VALIDATE_HDRI}. Judge: the written "
        f"material.json + textures/*.exr, wired by the Blender add-on's write-back (`apply_material`) "
        f"(*via USD*: the fit's material.usda through Blender's USD importer instead), "
        f"re-rendered by Cycles (seed {JUDGE_SEED}) under "
        f"{' and '.join(JUDGE_HDRIS)} ({'NOT unseen: also trained on' if judged_seen else 'never seen by the fit'}) "
        "from the 4 train cameras and the 2 novel ones "
        "(12 views); ΔE2000 over pixels one pixel inside both masks (radiance / HDRI white), pooled: mean / p95; "
        "(4x4: mean over 4x4-pixel block means). *floor*: the truth material through the same judge (Cycles' own "
        "noise). Map errors over the texels the fit marks observed, truth "
        f"{'area-averaged' if args.resolution <= TRUTH_RESOLUTION else 'bilinearly upsampled'} to the fitted resolution; "
        "base colour PSNR, roughness/metallic RMSE, normal: mean angle between the fitted and the truth normals "
        "(the truth's normals resampled, renormalized); [flat: the best flat map's error; normal: the flat map "
        "(0, 0, 1)'s]. Wall time and peak RSS: the `pbrfit fit` process. *On seen texels*: the judged ΔE2000 "
        "over the pixels whose texels the fit saw (the bilinear lookup of its observed masks at the pixel's UV "
        "over 0.5): all cameras / the novel ones, and the novel cameras' share of pixels on texels no train view "
        "saw (filled from their neighbours; there no fit can know the truth). *Well seen*: the map's "
        f"error over the observed texels that the train pixels see {WELL_SEEN_PIXELS:.0f} times or more (the sum "
        "of their bilinear weights; a texel seen through pixels wider than itself is determined only as an "
        "average with its neighbours).", "",
        "| case | maps | judged ΔE mean / p95 (4x4) | train cams | novel cams | on seen texels: all / novel cams "
        "(novel px on unseen) | via USD | floor ΔE mean / p95 (4x4) | "
        "map error, observed texels [flat] | observed | scalar errors | fit's own ΔE train / val | wall s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error'][:300]} |" + " |" * 12)
            continue
        j, f = r["judge"], r["floor"]
        errs = []
        for m, e in r["map_errors"].items():
            key, name, value = next(metric for metric in MAP_METRICS if metric[0] in e)
            text = f"{m} {name} {value.format(e[key])} [{value.format(e['flat_' + key])}]"
            well = e.get("well_seen")
            text += f"; well seen ({well['share']:.0%}): {value.format(well[key])}" if well else ""
            errs.append(text)
        share = min(e["observed_share"] for e in r["map_errors"].values())
        own = r["fit_own_de2000"]
        sc = ", ".join(f"{k} {v:.3g}" for k, v in r["scalar_errors"].items()) or "-"
        lines.append(
            f"| {r['case']} | {', '.join(r['maps'])} ({r['map_resolution']}²) | {j['all']['mean']:.2f} / "
            f"{j['all']['p95']:.2f} ({j['block4_mean']:.2f}) | {j['train_cameras']['mean']:.2f} / "
            f"{j['train_cameras']['p95']:.2f} | {j['novel_cameras']['mean']:.2f} / {j['novel_cameras']['p95']:.2f} | "
            f"{_seen_cell(j)} | {_usd_cell(r)} | {f['all']['mean']:.2f} / {f['all']['p95']:.2f} ({f['block4_mean']:.2f}) | {'; '.join(errs)} | "
            f"{share:.0%} | {sc} | {own['train'] or float('nan'):.2f} / {own['validate'] or float('nan'):.2f} | "
            f"{r['fit_wall_s']:.0f} | {r['fit_peak_rss_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "textures.md").write_text(text)
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:
        return _render_worker(Path(argv[1]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/benchmark_textures", help="results and fits (default %(default)s)")
    ap.add_argument("--cache", default=None, help="reference renders, reused when present (default OUT/cache)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--resolution", type=int, default=128, help="fitted map resolution ([textures] resolution)")
    ap.add_argument("--iterations", type=int, default=160, help="[textures] iterations (Adam steps)")
    ap.add_argument("--scalar-iterations", type=int, default=60, help="pbrfit fit --iterations (the scalar fit)")
    ap.add_argument("--backend", default="raster", choices=["raster", "auto"])
    ap.add_argument("--render-resolution", type=int, default=128, help="Cycles image side, px")
    ap.add_argument("--samples", type=int, default=64, help="Cycles samples per pixel")
    ap.add_argument("--extra-train-hdris", default="",
                    help="train the 4 train cameras under these HDRIs too (comma-separated, from city, courtyard, "
                         "sunset; a judge HDRI named here is no longer unseen): how much a second lighting buys")
    ap.add_argument("--publish", action="store_true", help="copy textures.md/json into benchmarks/")
    ap.add_argument("--rejudge", action="store_true",
                    help="reuse the fits an earlier run left in OUT (their wall time and memory as recorded) and "
                         "judge them again")
    ap.add_argument("--references-only", action="store_true",
                    help="render (or reuse) each case's references and noise floor into the cache, fit nothing")
    args = ap.parse_args(argv)
    args.extra_train_hdris = [h for h in args.extra_train_hdris.split(",") if h]
    for h in args.extra_train_hdris:
        if h not in (FIT_VALIDATE_HDRI, *JUDGE_HDRIS):
            ap.error(f"--extra-train-hdris: {h!r} is not one of {FIT_VALIDATE_HDRI}, {', '.join(JUDGE_HDRIS)}")
    out = Path(args.out).resolve()
    cache = Path(args.cache).resolve() if args.cache else out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    for name in args.cases.split(","):
        if name not in CASES:
            ap.error(f"unknown case {name!r}; known: {', '.join(CASES)}")
        try:
            row = run_case(name, args, out, cache)
        except Exception as e:  # keep benchmarking the other cases; the table shows the failure
            import traceback

            traceback.print_exc()
            row = {"case": name, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        if args.references_only:
            continue
        doc = {"machine": describe_machine(), "settings": vars(args), "rows": rows,
               "total_wall_s": time.monotonic() - started}
        (out / "textures.json").write_text(json.dumps(doc, indent=2))
        write_table(rows, out, args)
    if args.references_only:
        return 0 if all("error" not in r for r in rows) else 1
    print(write_table(rows, out, args))
    if args.publish:
        for f in ("textures.md", "textures.json"):
            shutil.copyfile(out / f, ROOT / "benchmarks" / f)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
