"""Reference renders with real Blender/Cycles, and the USD stage and job file that go with them.

A *case* is a part with a known ("truth") Principled BSDF, lit by Blender's bundled studio
HDRIs (or any lat-long image), rendered by Cycles from a ring of cameras. The renders are the
reference photographs a fit should reproduce; the exported stage carries the part bound to
an *initial* material (the fitter's starting guess), so the truth is only in ``truth.json``.

Usage::

    python scripts/cycles_reference.py SPEC.json     # relative paths: from SPEC.json's folder

    from cycles_reference import render_case         # scripts/ on sys.path
    result = render_case({"shape": "sphere", "material": {...}, "out": "case"})

Spec keys (a JSON object; unknown keys are an error):

* ``shape``: ``"sphere"`` (UV sphere 64x32, radius 1, smooth) or ``"suzanne"`` (Blender's
  monkey, subdivided twice, smooth). The object is named ``Part``; its mesh is triangulated
  (shortest diagonal) before rendering so Cycles and the exported stage hold the same triangles.
* ``material``: canonical pbrfit values (``core/pbrfit/params.py``); missing ones take
  Blender's defaults. ``initial_material``: the same for the exported stage (default:
  Blender's default Principled BSDF).
* ``train_hdri``: a bundled HDRI name (city, courtyard, forest, interior, night, studio,
  sunrise, sunset) or a path; ``validate_hdris``: a list of the same (default none).
* ``cameras``: a count (default 4) or a list of ``{"azimuth": deg, "elevation": deg}`` /
  ``{"location": [x, y, z], "look_at": [x, y, z]}`` objects, each optionally with
  ``"name"``, ``"distance"`` (scene units) and ``"lens"`` (mm, default 50). Azimuth 0 looks
  at the part's front (the camera sits on -Y), 90 from +X; elevation is above the XY plane.
  A count places camera i at azimuth 30 + 360 i / n, elevation +20 / -10 alternating, at the
  distance where the part's bounding sphere fills 1 / ``margin`` of the narrower field of view.
* ``resolution``: ``[w, h]`` pixels (default ``[160, 160]``); ``samples`` (default 128);
  ``seed`` (default 0); ``margin`` (default 1.1).
* ``max_bounces``: Cycles' limit on bounces (default Blender's, 12); 0 renders direct light
  only, to compare a renderer's direct lighting alone (``scripts/diagnose_pixel_filter.py``).
* ``validate_cameras``: camera indices rendered under the validation HDRIs (default all);
  ``train_cameras``: those rendered under the train HDRI (default all; ``[]`` renders only
  the validation views, as a benchmark's judge of a fitted material needs).
* ``lights``: Blender lamps besides the World (default none), each ``{"type": "SUN" | "POINT" |
  "SPOT" | "AREA", "energy": W (W/m^2 for a sun), "location": [x, y, z], "look_at": [x, y, z]}``
  (the lamp's -Z toward ``look_at``; default the origin), with ``"radius"`` (POINT and SPOT, m;
  soft falloff off: USD has no such mode), ``"spot_size"`` (SPOT, degrees, the full cone),
  ``"spot_blend"``, ``"angle"`` (SUN, degrees), ``"size"``, ``"size_y"`` and ``"shape"`` (AREA:
  SQUARE, RECTANGLE, DISK), ``"color"``, ``"temperature"`` (kelvin: Blender's colour
  temperature, exported as UsdLux ``colorTemperature``). ``{"type": "TUBE", "radiance": [r, g, b],
  "location": [x, y, z], "axis": [x, y, z], "length": m, "radius": m}`` is a tube light: Blender has
  no such lamp, so Cycles renders an emissive cylinder of that radiance (96 sides, emitting
  outward only, black end caps, invisible to the camera and casting no shadow), and the stage
  gets a UsdLux CylinderLight of the same size and radiance (not normalized). They light every render and are
  exported with the stage (Blender's USD exporter: UsdLux).
* ``props``: spheres of known material besides the Part (default none; a grey reference ball
  for calibration), each ``{"name": identifier, "location": [x, y, z], "radius": r,
  "material": {...}}`` (UV sphere 48x24, smooth, triangulated); rendered and exported with their
  own material; the result's ``props`` maps each name to its Mesh prim path. Cameras frame the
  Part only: raise ``margin`` to bring a prop into view.
* ``out``: the output directory (required).

Output in ``out`` (staged, then moved in: an error leaves ``out`` as it was; files of an
earlier run that this one does not write are left alone):

* ``hdri/<name>.exr``: copies of the HDRIs; the World's Environment Texture loads the copy.
* ``scene.usda``: ``bpy.ops.wm.usd_export`` of the Part, the cameras and the World (Z-up,
  metersPerUnit 1, the World as a DomeLight whose ``inputs:texture:file`` is the relative
  ``hdri/<train>.exr`` with ``xformOp:rotateXYZ = (90, 0, 90)``; see below), the initial
  material as a UsdPreviewSurface plus an OpenPBR MaterialX network.
* ``refs/<hdri>/<camera>.exr``: Cycles renders, linear scene-referred Rec.709 RGBA float32
  (ZIP-compressed), RGB premultiplied by alpha, alpha = the Part's pixel coverage (film
  transparent), row 0 at the top. View transform
  Standard, look None, exposure 0, gamma 1, no denoising, no adaptive sampling, Filter
  Glossy 0, no clamping, CPU, fixed seed, World strength 1, pixel filter Blackman-Harris
  1.5 px (Blender's default). Same spec, same pixels (the headers hold Cycles' timings).
* ``job.toml``: a pbrfit job (scene, target, one ``[[views]]`` per render; validation
  views name their ``environment`` and ``split = "validate"``).
* ``truth.json``: ``{"material", "initial_material", "spec", "render"}``.

World orientation: Cycles looks a direction d (world, Z-up) up in the lat-long image at
u = 0.5 - atan2(d.y, d.x) / 2 pi (u grows to the right), v = 0.5 + asin(d.z) / pi (v grows
upward), i.e. the image centre faces +X, u = 0.25 faces +Y, the top row +Z (checked with
single-patch HDRIs). The World's node tree here has an (identity) Mapping node,
which makes Blender write the DomeLight with ``rotateXYZ = (90, 0, 90)``; that rotation takes
UsdLux's dome frame (+Y pole, centre toward +Z, u = 0.25 toward +X) onto exactly this lookup.
Validation HDRIs are lit with the same orientation, so a reader applies the DomeLight's
transform to them too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import bpy
from mathutils import Vector

from pbrfit.atomic import OutputDir, atomic_write_text
from pbrfit.errors import InputError, PbrfitError
from pbrfit.params import PARAMETERS, normalize_material

# The Principled socket table lives in the Blender add-on (its one copy); re-exported here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blender_addon"))
from pbrfit_blender.sockets import MODEL_SETTINGS, SOCKETS

__all__ = [
    "SOCKETS",
    "BUNDLED_HDRIS",
    "SPEC_DEFAULTS",
    "BlenderError",
    "bundled_hdri_dir",
    "render_case",
    "main",
]

BUNDLED_HDRIS: tuple[str, ...] = (
    "city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")

SPEC_DEFAULTS: dict[str, object] = {
    "initial_material": {},
    "validate_hdris": [],
    "cameras": 4,
    "resolution": [160, 160],
    "samples": 128,
    "seed": 0,
    "margin": 1.1,
    "max_bounces": None,
    "validate_cameras": None,
    "train_cameras": None,
    "lights": [],
    "props": [],
}
_REQUIRED = ("shape", "material", "train_hdri", "out")
_SHAPES = ("sphere", "suzanne")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PART = "Part"
_SENSOR_MM = 36.0  # Blender's default sensor width, fitted to the larger image side


def bundled_hdri_dir() -> Path:
    """Folder of Blender's bundled studio-light HDRIs (1024x512 EXR, CC0)."""
    return Path(bpy.utils.system_resource("DATAFILES")) / "studiolights" / "world"


# --- the spec --------------------------------------------------------------------------------

@dataclass
class _CameraSpec:
    name: str
    lens_mm: float
    azimuth_deg: float | None = None
    elevation_deg: float | None = None
    distance: float | None = None
    location: tuple[float, float, float] | None = None
    look_at: tuple[float, float, float] | None = None


@dataclass
class _Case:
    shape: str
    material: dict
    initial_material: dict
    hdris: dict[str, Path]  # name -> source file; the first is the train HDRI
    train: str
    validate: list[str]
    cameras: list[_CameraSpec]
    validate_cameras: list[int]
    train_cameras: list[int]
    resolution: tuple[int, int]
    samples: int
    seed: int
    margin: float
    out: Path
    lights: list = None
    props: list = None
    max_bounces: int | None = None  # None: Blender's default


def _number(spec: Mapping, key: str, src: str, kind=float, minimum=None):
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not float(value).is_integer()):
        raise InputError(f"{src}: '{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    value = kind(value)
    if minimum is not None and value < minimum:
        raise InputError(f"{src}: '{key}' must be at least {minimum}, got {value}")
    return value


def _hdri_source(ref: object, base_dir: Path, src: str) -> tuple[str, Path]:
    if not isinstance(ref, str) or not ref:
        raise InputError(f"{src}: an HDRI must be a bundled name ({', '.join(BUNDLED_HDRIS)}) or a path, got {ref!r}")
    if ref in BUNDLED_HDRIS:
        return ref, bundled_hdri_dir() / f"{ref}.exr"
    path = (base_dir / ref).resolve()
    if not path.is_file():
        raise InputError(f"{src}: HDRI '{ref}' is neither a bundled name ({', '.join(BUNDLED_HDRIS)}) nor a file")
    if not _NAME.match(path.stem):
        raise InputError(f"{src}: HDRI file name '{path.name}' must be letters, digits and _; rename it")
    return path.stem, path


def _cameras(value: object, src: str) -> list[_CameraSpec]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise InputError(f"{src}: 'cameras' must be at least 1, got {value}")
        return [_CameraSpec(f"Cam{i}", 50.0, 30.0 + 360.0 * i / value, 20.0 if i % 2 == 0 else -10.0)
                for i in range(value)]
    if not isinstance(value, list) or not value:
        raise InputError(f"{src}: 'cameras' must be a count or a non-empty list of camera objects, got {value!r}")
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, dict):
            raise InputError(f"{src}: cameras[{i}] must be an object, got {c!r}")
        unknown = set(c) - {"name", "lens", "azimuth", "elevation", "distance", "location", "look_at"}
        if unknown:
            raise InputError(f"{src}: cameras[{i}] has unknown keys {sorted(unknown)}")
        name = c.get("name", f"Cam{i}")
        if not isinstance(name, str) or not _NAME.match(name) or name == _PART:
            raise InputError(f"{src}: cameras[{i}] name {name!r} must be letters, digits and _ (not '{_PART}')")
        try:
            cam = _CameraSpec(name, float(c.get("lens", 50.0)))
            if "location" in c:
                cam.location = tuple(float(v) for v in c["location"])
                cam.look_at = tuple(float(v) for v in c.get("look_at", (0.0, 0.0, 0.0)))
                if len(cam.location) != 3 or len(cam.look_at) != 3:
                    raise ValueError
            else:
                cam.azimuth_deg = float(c["azimuth"])
                cam.elevation_deg = float(c.get("elevation", 0.0))
                cam.distance = float(c["distance"]) if "distance" in c else None
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{src}: cameras[{i}] needs numeric 'azimuth' (and 'elevation') or a 3-vector "
                             f"'location' (and 'look_at')") from None
        if cam.lens_mm <= 0:
            raise InputError(f"{src}: cameras[{i}] lens must be positive (mm), got {cam.lens_mm}")
        if (cam.distance is not None and cam.distance <= 0) or (
                cam.location is not None and cam.location == cam.look_at):
            raise InputError(f"{src}: cameras[{i}] sits on the point it looks at; move it away")
        out.append(cam)
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise InputError(f"{src}: camera names must be unique, got {names}")
    return out


def _parse(spec: Mapping, base_dir: Path, src: str) -> _Case:
    if not isinstance(spec, Mapping):
        raise InputError(f"{src}: must be a JSON object")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise InputError(f"{src}: missing required key(s) {missing}")
    unknown = set(spec) - set(_REQUIRED) - set(SPEC_DEFAULTS)
    if unknown:
        raise InputError(f"{src}: unknown key(s) {sorted(unknown)}; known: {sorted((*_REQUIRED, *SPEC_DEFAULTS))}")
    s = {**SPEC_DEFAULTS, **spec}
    if s["shape"] not in _SHAPES:
        raise InputError(f"{src}: 'shape' must be one of {list(_SHAPES)}, got {s['shape']!r}")
    for key in ("material", "initial_material"):
        if not isinstance(s[key], Mapping):
            raise InputError(f"{src}: '{key}' must be an object of canonical parameter values")
    material = normalize_material(s["material"], source=f"{src} material")
    initial = normalize_material(s["initial_material"], source=f"{src} initial_material")

    train, train_src = _hdri_source(s["train_hdri"], base_dir, src)
    hdris = {train: train_src}
    validate = []
    if not isinstance(s["validate_hdris"], list):
        raise InputError(f"{src}: 'validate_hdris' must be a list of HDRI names or paths")
    for ref in s["validate_hdris"]:
        name, path = _hdri_source(ref, base_dir, src)
        if name == train:
            raise InputError(f"{src}: validation HDRI '{name}' is the train HDRI; validate under other lighting")
        if hdris.get(name, path) != path:
            raise InputError(f"{src}: two different HDRIs are both named '{name}'; rename one")
        hdris[name] = path
        if name not in validate:
            validate.append(name)

    cameras = _cameras(s["cameras"], src)

    def indices(key):  # a list of camera indices, default all
        v = s[key]
        if v is None:
            return list(range(len(cameras)))
        if not isinstance(v, list) or not all(isinstance(i, int) and 0 <= i < len(cameras) for i in v):
            raise InputError(f"{src}: '{key}' must list camera indices 0..{len(cameras) - 1}, got {v!r}")
        return v

    vc, tc = indices("validate_cameras"), indices("train_cameras")
    res = s["resolution"]
    if (not isinstance(res, (list, tuple)) or len(res) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in res)):
        raise InputError(f"{src}: 'resolution' must be [width, height] in pixels, got {res!r}")
    if not isinstance(s["out"], str) or not s["out"]:
        raise InputError(f"{src}: 'out' must be a directory path")
    return _Case(
        shape=s["shape"], material=material, initial_material=initial, hdris=hdris, train=train,
        validate=validate, cameras=cameras, validate_cameras=sorted(set(vc)), train_cameras=sorted(set(tc)),
        resolution=(int(res[0]), int(res[1])), samples=_number(s, "samples", src, int, 1),
        seed=_number(s, "seed", src, int, 0), margin=_number(s, "margin", src, float, 1.0),
        out=(base_dir / s["out"]).resolve(), lights=_lights(s["lights"], src), props=_props(s["props"], src),
        max_bounces=None if s["max_bounces"] is None else _number(s, "max_bounces", src, int, 0))


def _props(value: object, src: str) -> list[dict]:
    """Spheres of known material besides the Part (a grey reference ball): name, location, radius, material."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InputError(f"{src}: 'props' must be a list of objects")
    out = []
    for i, prop in enumerate(value):
        if set(prop) != {"name", "location", "radius", "material"} or not _NAME.match(str(prop["name"])) \
                or prop["name"] == _PART:
            raise InputError(f"{src}: props[{i}] needs exactly name (an identifier other than {_PART}), location, "
                             "radius and material")
        out.append({"name": prop["name"], "location": [float(v) for v in prop["location"]],
                    "radius": float(prop["radius"]),
                    "material": normalize_material(prop["material"], source=f"{src} props[{i}] material")})
    return out


_LIGHT_KEYS = {"type", "energy", "location", "look_at", "radius", "angle", "size", "size_y", "shape", "color",
               "spot_size", "spot_blend", "temperature"}


_TUBE_KEYS = {"type", "radiance", "location", "axis", "length", "radius"}


def _lights(value: object, src: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InputError(f"{src}: 'lights' must be a list of objects")
    for i, light in enumerate(value):
        if light.get("type") == "TUBE":
            if set(light) != _TUBE_KEYS:
                raise InputError(f"{src}: lights[{i}]: a TUBE takes exactly {sorted(_TUBE_KEYS)}")
            continue
        if light.get("type") not in ("SUN", "POINT", "SPOT", "AREA") or not {"energy", "location"} <= set(light):
            raise InputError(f"{src}: lights[{i}] needs type (SUN, POINT, SPOT, AREA), energy and location")
        unknown = set(light) - _LIGHT_KEYS
        if unknown:
            raise InputError(f"{src}: lights[{i}]: unknown key(s) {sorted(unknown)}; known: {sorted(_LIGHT_KEYS)}")
    return [dict(v) for v in value]


def _add_tube(i: int, spec: Mapping):
    """An emissive open cylinder standing in for a tube light (see the module docstring)."""
    bpy.ops.mesh.primitive_cylinder_add(vertices=96, radius=float(spec["radius"]), depth=float(spec["length"]),
                                        end_fill_type="NGON", location=Vector(spec["location"]))
    obj = bpy.context.active_object
    obj.name = f"Tube{i}"
    obj.rotation_euler = Vector(spec["axis"]).to_track_quat("Z", "Y").to_euler()  # the cylinder's Z on the axis
    radiance = [float(c) for c in spec["radiance"]]
    strength = max(radiance)
    glow = bpy.data.materials.new(f"Tube{i}Glow")
    glow.use_nodes = True
    nodes = glow.node_tree.nodes
    nodes.clear()
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*[c / strength for c in radiance], 1.0)
    emit.inputs["Strength"].default_value = strength
    out = nodes.new("ShaderNodeOutputMaterial")
    # one-sided, outward: Cycles' emission is two-sided, and the far wall's inner side would shine
    # through the near wall (no shadow)
    geometry, mix = nodes.new("ShaderNodeNewGeometry"), nodes.new("ShaderNodeMixShader")
    links = glow.node_tree.links
    links.new(geometry.outputs["Backfacing"], mix.inputs["Fac"])
    links.new(emit.outputs["Emission"], mix.inputs[1])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])
    cap = bpy.data.materials.new(f"Tube{i}Cap")  # UsdLux: the caps do not emit
    cap.diffuse_color = (0, 0, 0, 1)
    cap.use_nodes = True
    cap.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0, 0, 0, 1)
    cap.node_tree.nodes["Principled BSDF"].inputs["Specular IOR Level"].default_value = 0.0
    obj.data.materials.append(glow)
    obj.data.materials.append(cap)
    for poly in obj.data.polygons:
        poly.material_index = 1 if abs(poly.normal.z) > 0.9 else 0
    obj.data.shade_smooth()
    obj.visible_camera = False  # as lights are to pbrfit's camera rays
    obj.visible_shadow = False  # a light is no occluder in pbrfit
    return obj


def _write_tubes(path: Path, tubes: Sequence[Mapping]) -> None:
    """Add each tube's UsdLux CylinderLight (local X along its axis) to the exported stage."""
    from pxr import Gf, Usd, UsdGeom, UsdLux

    if not tubes:
        return
    stage = Usd.Stage.Open(str(path))
    root = stage.GetDefaultPrim().GetPath() if stage.GetDefaultPrim() else "/root"
    for i, spec in enumerate(tubes):
        light = UsdLux.CylinderLight.Define(stage, f"{root}/Tube{i}")
        radiance = [float(c) for c in spec["radiance"]]
        light.CreateIntensityAttr(max(radiance))
        light.CreateColorAttr(Gf.Vec3f(*[c / max(radiance) for c in radiance]))
        light.CreateLengthAttr(float(spec["length"]))
        light.CreateRadiusAttr(float(spec["radius"]))
        light.CreateNormalizeAttr(False)
        x = Vector(spec["axis"]).normalized()
        helper = Vector((0.0, 0.0, 1.0)) if abs(x.z) < 0.9 else Vector((1.0, 0.0, 0.0))
        y = helper.cross(x).normalized()
        z = x.cross(y)
        m = Gf.Matrix4d(x.x, x.y, x.z, 0, y.x, y.y, y.z, 0, z.x, z.y, z.z, 0, *spec["location"], 1)  # row vectors
        UsdGeom.Xformable(light).AddTransformOp().Set(m)
    stage.GetRootLayer().Save()


def _add_lights(case: _Case) -> tuple[list, list]:
    """The spec's lamps, each aimed with its -Z at ``look_at``, and its tubes' stand-ins."""
    objects, tubes = [], []
    for i, spec in enumerate(case.lights or []):
        if spec["type"] == "TUBE":
            tubes.append(_add_tube(i, spec))
            continue
        data = bpy.data.lights.new(f"Lamp{i}", spec["type"])
        data.energy = float(spec["energy"])
        data.color = tuple(spec.get("color", (1.0, 1.0, 1.0)))
        if "temperature" in spec:
            data.use_temperature = True
            data.temperature = float(spec["temperature"])
        if spec["type"] in ("POINT", "SPOT"):
            data.shadow_soft_size = float(spec.get("radius", 0.0))
            data.use_soft_falloff = False
            if spec["type"] == "SPOT":
                data.spot_size = math.radians(float(spec.get("spot_size", 45.0)))
                data.spot_blend = float(spec.get("spot_blend", 0.15))
        elif spec["type"] == "SUN":
            data.angle = math.radians(float(spec.get("angle", 0.526)))
        else:
            data.shape = spec.get("shape", "RECTANGLE" if "size_y" in spec else "SQUARE")
            data.size = float(spec.get("size", 1.0))
            data.size_y = float(spec.get("size_y", spec.get("size", 1.0)))
        obj = bpy.data.objects.new(f"Lamp{i}", data)
        bpy.context.scene.collection.objects.link(obj)
        obj.location = Vector(spec["location"])
        direction = Vector(spec.get("look_at", (0.0, 0.0, 0.0))) - obj.location
        obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        objects.append(obj)
    return objects, tubes


# --- Blender's output ------------------------------------------------------------------------

class _BlenderOutput:
    """While active, everything written to file descriptors 1 and 2 (Blender's C code
    included) goes to ``log``; :meth:`console` lends the real ones back for a moment."""

    def __init__(self, log: Path):
        self.log = log
        self._saved: list[int] = []

    @staticmethod
    def _flush() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)

    def __enter__(self) -> _BlenderOutput:
        self._flush()
        self._saved = [os.dup(1), os.dup(2)]
        self._file = open(self.log, "ab")
        self._redirect()
        return self

    def _redirect(self) -> None:
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)

    def _restore(self) -> None:
        self._flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)

    @contextlib.contextmanager
    def console(self) -> Iterator[None]:
        self._restore()
        try:
            yield
        finally:
            self._flush()
            self._redirect()

    def __exit__(self, *exc) -> bool:
        self._restore()
        for fd in self._saved:
            os.close(fd)
        self._file.close()
        return False


class BlenderError(PbrfitError):
    """Blender failed; the message carries the tail of Blender's own log."""


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    text = [t for t in text if not t.startswith("Fra:")]
    return "\n".join(text[-lines:])


# --- scene construction ----------------------------------------------------------------------

def _set_principled(node, values: Mapping[str, object]) -> None:
    """Set Principled BSDF inputs from canonical values (colours get alpha 1)."""
    for name, socket_name in SOCKETS.items():
        socket = node.inputs[socket_name]
        value = values[name]
        if PARAMETERS[name].size == 3:
            value = list(value) + ([1.0] if len(socket.default_value) == 4 else [])
        socket.default_value = value
    for setting, value in MODEL_SETTINGS.items():
        setattr(node, setting, value)


def _new_material(name: str, values: Mapping[str, object]):
    mat = bpy.data.materials.new(name)
    nodes = mat.node_tree.nodes
    principled = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    _set_principled(principled, values)
    return mat


def _add_part(shape: str):
    if shape == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(segments=64, ring_count=32, radius=1.0)
    else:
        bpy.ops.mesh.primitive_monkey_add()
    part = bpy.context.active_object
    part.name = _PART
    part.data.name = _PART
    if shape == "suzanne":
        sub = part.modifiers.new("Subdivision", "SUBSURF")
        sub.levels = sub.render_levels = 2
        bpy.ops.object.modifier_apply(modifier=sub.name)
    tri = part.modifiers.new("Triangulate", "TRIANGULATE")
    tri.quad_method = "SHORTEST_DIAGONAL"
    bpy.ops.object.modifier_apply(modifier=tri.name)
    part.data.shade_smooth()
    return part


def _bounding_sphere(obj) -> tuple[Vector, float]:
    """Centre of the world-space bounding box and the farthest vertex's distance from it."""
    pts = [obj.matrix_world @ v.co for v in obj.data.vertices]
    lo = Vector([min(p[i] for p in pts) for i in range(3)])
    hi = Vector([max(p[i] for p in pts) for i in range(3)])
    centre = (lo + hi) / 2
    return centre, max((p - centre).length for p in pts)


def _add_cameras(case: _Case, centre: Vector, radius: float) -> list:
    w, h = case.resolution
    objs = []
    for c in case.cameras:
        data = bpy.data.cameras.new(c.name)
        data.lens = c.lens_mm
        data.sensor_width = _SENSOR_MM
        data.sensor_fit = "AUTO"
        obj = bpy.data.objects.new(c.name, data)
        bpy.context.scene.collection.objects.link(obj)
        if c.location is not None:
            loc, target = Vector(c.location), Vector(c.look_at)
        else:
            # Half the narrower field of view: the sensor width spans the larger image side.
            half = math.atan(_SENSOR_MM / 2 * min(w, h) / max(w, h) / c.lens_mm)
            dist = c.distance if c.distance is not None else radius * case.margin / math.sin(half)
            az, el = math.radians(c.azimuth_deg), math.radians(c.elevation_deg)
            loc = centre + dist * Vector((math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)))
            target = centre
        obj.location = loc
        # Blender cameras look down local -Z with +Y up, like USD's.
        obj.rotation_euler = (target - loc).to_track_quat("-Z", "Y").to_euler()
        objs.append(obj)
    return objs


def _setup_world(image):
    """World: Texture Coordinate -> (identity) Mapping -> Environment Texture -> Background (1)."""
    world = bpy.data.worlds.new("World")
    bpy.context.scene.world = world
    nt = world.node_tree
    background = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBackground")
    background.inputs["Strength"].default_value = 1.0
    coords = nt.nodes.new("ShaderNodeTexCoord")
    mapping = nt.nodes.new("ShaderNodeMapping")
    env = nt.nodes.new("ShaderNodeTexEnvironment")
    env.image = image
    env.projection = "EQUIRECTANGULAR"
    env.interpolation = "Linear"
    nt.links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    nt.links.new(env.outputs["Color"], background.inputs["Color"])
    return env


def _setup_render(case: _Case) -> None:
    sc = bpy.context.scene
    r, cy = sc.render, sc.cycles
    r.engine = "CYCLES"
    cy.device = "CPU"
    cy.samples = case.samples
    cy.use_adaptive_sampling = False
    cy.use_denoising = False
    cy.seed = case.seed
    cy.use_animated_seed = False
    cy.blur_glossy = 0.0           # "Filter Glossy"
    cy.sample_clamp_direct = 0.0
    cy.sample_clamp_indirect = 0.0
    if case.max_bounces is not None:
        cy.max_bounces = case.max_bounces
    cy.film_exposure = 1.0
    r.film_transparent = True
    r.resolution_x, r.resolution_y = case.resolution
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.use_persistent_data = True   # later renders reuse the synced scene (checked: same pixels)
    for stamp in ("date", "time", "render_time", "memory", "hostname", "filename", "frame"):
        setattr(r, f"use_stamp_{stamp}", False)  # reproducible EXR headers
    vs = sc.view_settings
    vs.view_transform = "Standard"
    vs.look = "None"
    vs.exposure = 0.0
    vs.gamma = 1.0
    im = r.image_settings
    im.file_format = "OPEN_EXR"
    im.color_mode = "RGBA"
    im.color_depth = "32"
    im.exr_codec = "ZIP"


def _render_settings(case: _Case) -> dict:
    sc = bpy.context.scene
    return {
        "blender": bpy.app.version_string, "engine": "CYCLES", "device": "CPU",
        "samples": case.samples, "seed": case.seed, "resolution": list(case.resolution),
        "pixel_filter": sc.cycles.pixel_filter_type, "filter_width_px": sc.cycles.filter_width,
        "max_bounces": sc.cycles.max_bounces, "working_space": bpy.data.colorspace.working_space,
        "view_transform": "Standard", "film_transparent": True, "world_strength": 1.0,
    }


# --- the stage and job -----------------------------------------------------------------------

def _export_stage(path: Path, objects: Sequence) -> None:
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[0]
    bpy.ops.wm.usd_export(
        filepath=str(path), check_existing=False, selected_objects_only=True,
        export_materials=True, generate_preview_surface=True, generate_materialx_network=True,
        convert_world_material=True, export_textures_mode="KEEP", relative_paths=True,
        export_animation=False, evaluation_mode="RENDER", convert_orientation=False,
        export_lights=True, export_cameras=True, export_meshes=True,
    )
    _fix_color_temperature(path, [o for o in objects if o.type == "LIGHT"])


def _blender_object(prim) -> str | None:
    """The Blender object a prim of Blender's USD export belongs to (its parent Xform's
    ``userProperties:blender:object_name``), or None."""
    parent = prim.GetParent()
    attr = parent.GetAttribute("userProperties:blender:object_name") if parent else None
    return attr.Get() if attr and attr.HasValue() else None


def _fix_color_temperature(path: Path, lamps: Sequence) -> None:
    """Blender 5.0's USD exporter writes ``inputs:enableColorTemperature = 1`` on every lamp,
    ``use_temperature`` or not (and its importer reads it back as on, at 6500 K unless a
    temperature was written). The stage must say what Cycles rendered: off where the lamp's
    ``use_temperature`` is off (UsdLux's 6500 K colour is 4% off white)."""
    from pxr import Usd, UsdLux

    off = {o.name for o in lamps if not o.data.use_temperature}
    if not off:
        return
    stage = Usd.Stage.Open(str(path))
    for prim in stage.Traverse():
        owner = _blender_object(prim) or prim.GetName()
        if prim.HasAPI(UsdLux.LightAPI) and not prim.IsA(UsdLux.DomeLight) and owner in off:
            UsdLux.LightAPI(prim).CreateEnableColorTemperatureAttr().Set(False)
    stage.GetRootLayer().Save()


def _stage_prims(path: Path, camera_names: Sequence[str]) -> tuple[str, dict[str, str], dict[str, str]]:
    """Prim paths of the Part's Mesh, of each Camera and of every mesh (by Blender object name)
    in the exported stage, after checking the DomeLight's texture resolves."""
    from pxr import Usd, UsdGeom, UsdLux  # usd-core, independent of bpy's private USD

    stage = Usd.Stage.Open(str(path))
    meshes, cameras, domes = {}, {}, []
    for prim in stage.Traverse():
        owner = _blender_object(prim)
        if prim.IsA(UsdGeom.Mesh):
            meshes[owner] = str(prim.GetPath())
        elif prim.IsA(UsdGeom.Camera):
            cameras[owner] = str(prim.GetPath())
        elif prim.IsA(UsdLux.DomeLight):
            domes.append(prim)
    if _PART not in meshes or any(n not in cameras for n in camera_names) or len(domes) != 1:
        raise BlenderError(f"{path}: the USD export lacks the Part mesh, a camera or the DomeLight "
                           f"(meshes {meshes}, cameras {cameras}, dome lights {len(domes)})")
    asset = UsdLux.DomeLight(domes[0]).GetTextureFileAttr().Get()
    if asset is None or not asset.resolvedPath:
        raise BlenderError(f"{path}: the DomeLight's texture {asset} does not resolve")
    return meshes[_PART], {n: cameras[n] for n in camera_names}, meshes


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a TOML basic string for the paths and prim names used here


def _job_toml(target: str, views: Sequence[dict]) -> str:
    lines = [
        "# pbrfit job: written by scripts/cycles_reference.py",
        f'scene = {_toml_str("scene.usda")}',
        f"target = {_toml_str(target)}",
    ]
    for v in views:
        lines += ["", "[[views]]"] + [f"{k} = {_toml_str(val)}" for k, val in v.items()]
    return "\n".join(lines) + "\n"


# --- the case --------------------------------------------------------------------------------

def render_case(spec: Mapping, *, base_dir: str | os.PathLike | None = None,
                progress=None, source: str = "spec") -> dict:
    """Render one case and write its stage, references, job and truth (see the module doc).

    Args:
        spec: the case (keys in the module docstring).
        base_dir: folder that relative paths in ``spec`` start from (default: the cwd).
        progress: optional ``callable(str)`` told about each finished render.
        source: how error messages name the spec (the CLI passes the file name).

    Returns:
        ``{"out", "scene", "job", "truth", "target", "cameras": {name: prim path},
        "renders": [relative image paths], "seconds"}`` (paths absolute unless noted).

    Raises:
        InputError: a bad spec (one line naming the key).
        BlenderError: Blender failed; the message carries the tail of its log.
    """
    start = time.perf_counter()
    case = _parse(spec, Path(base_dir or os.getcwd()), source)
    with tempfile.TemporaryDirectory(prefix="cycles_reference.") as tmp, OutputDir(case.out) as staging:
        log = Path(tmp) / "blender.log"
        try:
            with _BlenderOutput(log) as output:
                def report(msg: str) -> None:
                    if progress:
                        with output.console():
                            progress(msg)
                result = _run(case, staging, report)
        except PbrfitError:
            raise
        except Exception as e:  # Blender reports failures as RuntimeError with its own text
            tail = _log_tail(log)
            raise BlenderError(f"Blender failed: {e}" + (f"\n--- Blender log ---\n{tail}" if tail else "")) from e
        truth = {
            "material": case.material,
            "initial_material": case.initial_material,
            "spec": {k: v for k, v in spec.items() if k != "out"},
            "render": result.pop("render"),
        }
        atomic_write_text(staging / "truth.json", json.dumps(truth, indent=2) + "\n")
    result.update(out=str(case.out), scene=str(case.out / "scene.usda"), job=str(case.out / "job.toml"),
                  truth=str(case.out / "truth.json"), seconds=round(time.perf_counter() - start, 2))
    return result


def _run(case: _Case, staging: Path, progress) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    (staging / "hdri").mkdir()
    images, hdri_paths = {}, {}
    for name, src in case.hdris.items():
        hdri_paths[name] = f"hdri/{name}{src.suffix.lower()}"
        copy = staging / hdri_paths[name]
        shutil.copyfile(src, copy)
        images[name] = bpy.data.images.load(str(copy))
        images[name].colorspace_settings.name = bpy.data.colorspace.working_space

    part = _add_part(case.shape)
    truth_mat = _new_material("ReferenceTruth", case.material)
    part.data.materials.append(truth_mat)
    centre, radius = _bounding_sphere(part)
    props = []
    for prop in case.props or []:
        bpy.ops.mesh.primitive_uv_sphere_add(segments=48, ring_count=24, radius=prop["radius"],
                                             location=prop["location"])
        obj = bpy.context.active_object
        obj.name = obj.data.name = prop["name"]
        tri = obj.modifiers.new("Triangulate", "TRIANGULATE")
        bpy.ops.object.modifier_apply(modifier=tri.name)
        obj.data.shade_smooth()
        obj.data.materials.append(_new_material(f"{prop['name']}Material", prop["material"]))
        props.append(obj)
    cameras = _add_cameras(case, centre, radius)
    lamps, tubes = _add_lights(case)
    env = _setup_world(images[case.train])
    _setup_render(case)

    sc = bpy.context.scene
    jobs = [(case.train, i, "train") for i in case.train_cameras]
    jobs += [(h, i, "validate") for h in case.validate for i in case.validate_cameras]
    renders = []  # (hdri, camera index, split, relative image path)
    for hdri, i, split in jobs:
        env.image = images[hdri]
        sc.camera = cameras[i]
        rel = f"refs/{hdri}/{cameras[i].name}.exr"
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        sc.render.filepath = str(staging / rel)
        t = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        if not (staging / rel).is_file():
            raise RuntimeError(f"Cycles wrote no image for {rel}")
        renders.append((hdri, i, split, rel))
        progress(f"{rel}: {time.perf_counter() - t:.1f} s")

    # The exported stage carries the initial guess under the train HDRI.
    env.image = images[case.train]
    part.data.materials[0] = _new_material("PartMaterial", case.initial_material)
    _export_stage(staging / "scene.usda", [part, *props, *cameras, *lamps])
    _write_tubes(staging / "scene.usda", [s for s in case.lights or [] if s["type"] == "TUBE"])
    target, cam_paths, meshes = _stage_prims(staging / "scene.usda", [c.name for c in cameras])
    prop_paths = {p.name: meshes[p.name] for p in props}

    views = []
    for hdri, i, split, rel in renders:
        view = {"camera": cam_paths[cameras[i].name], "image": rel}
        if split == "validate":
            view.update(environment=hdri_paths[hdri], split="validate")
        views.append(view)
    atomic_write_text(staging / "job.toml", _job_toml(target, views))
    return {"target": target, "cameras": cam_paths, "renders": [r[-1] for r in renders],
            "render": _render_settings(case), "props": prop_paths}


# --- CLI -------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python scripts/cycles_reference.py SPEC.json``: exit 0, 2 on a bad spec, 1 if Blender fails."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="JSON spec file; relative paths in it start from its folder")
    args = ap.parse_args(argv)
    try:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except OSError as e:
            raise InputError(f"{args.spec}: cannot read ({e.strerror}); check the path") from None
        except json.JSONDecodeError as e:
            raise InputError(f"{args.spec}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
        result = render_case(spec, base_dir=Path(args.spec).resolve().parent, source=args.spec,
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except PbrfitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {result['out']} ({len(result['renders'])} renders, {result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
