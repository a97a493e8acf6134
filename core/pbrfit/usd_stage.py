"""The one USD stage reader: target mesh, cameras, dome light and initial material.

The CLI's job reader and the host adapters (Omniverse, Blender) all read stages through
:func:`read_stage`, so every host sees the same geometry, cameras and lighting.

Frames and units
----------------
The stage's world frame is kept as it is: its up axis (``upAxis``, "Y" or "Z") and its
linear unit (``metersPerUnit``) are reported, never converted. Geometry is flattened into
world space with ``ComputeLocalToWorldTransform`` at the requested time.

Mesh
----
Every face of the target ``UsdGeom.Mesh`` is split into a triangle fan (v0, vi, vi+1),
respecting ``faceVertexCounts``; faces listed in ``holeIndices`` and faces with fewer than
three vertices are dropped; the subdivision scheme is ignored (the control cage is used).
``orientation = "leftHanded"`` flips the winding, and so does a mirroring world transform
(negative determinant), so triangles are always counter-clockwise seen from the front in
world space. Shading normals come from ``primvars:normals`` (which wins, as USD specifies)
or the ``normals`` attribute, with any interpolation (constant, uniform, vertex, varying,
faceVarying) and indexed primvars; they are transformed by the inverse transpose of the
world matrix and normalized. Texture coordinates come from ``primvars:st`` (what Blender
5.0 writes with its default "rename UV maps"), else ``primvars:UVMap`` (Blender without
renaming), else the first ``texCoord2f`` primvar by name.

The target may name the Mesh itself or an ancestor (Blender writes each object as an Xform
with its mesh data as a child Mesh: ``/root/Part/PartMesh``); an ancestor must contain
exactly one Mesh. Without a target the stage must contain exactly one Mesh.

Cameras
-------
Every perspective ``UsdGeom.Camera`` is read with ``GetCamera(time)`` for its lens and
``ComputeLocalToWorldTransform`` for its pose, transposed from USD's row-vector matrices
into pbrfit's column-vector convention (``p_world = M @ p_camera``). A uniform scale in the
camera's world matrix is removed (a pinhole image does not change under it); a
non-uniform scale, a shear or a mirror is an error. As for meshes, a camera may be named
by an ancestor holding exactly one Camera (Blender writes ``/root/Cam/CamData``).
Blender's exporter writes lens and sensor in tenths of a scene unit (a 50 mm lens on a
36 mm sensor is focalLength 0.5, horizontalAperture 0.36); only their ratios matter.

Dome light and its orientation
------------------------------
pbrfit's dome frame is UsdLuxDomeLight's (see :mod:`pbrfit.scene`): +Y is the pole (top
image row), the image centre looks toward +Z, u = 0.25 toward +X. ``world_from_dome`` is
the rotation taking dome-frame directions to world directions:

1. ``R`` = the DomeLight's world rotation (``ComputeLocalToWorldTransform`` with scale
   removed).
2. ``poleAxis`` (the ``DomeLight_1`` schema, or the same attribute authored on a plain
   ``DomeLight``) sets the dome's starting alignment ``P``, applied before ``R``: "Y" keeps
   the pole on +Y (``P = I``); "Z" turns it onto +Z with ``P = Rx(+90 deg)`` (so the image
   centre looks toward -Y, as the schema specifies); "scene" (the fallback of
   ``DomeLight_1``) means "Y" on a Y-up stage and "Z" on a Z-up stage.
   ``world_from_dome = R @ P``.
3. A plain ``DomeLight`` without ``poleAxis`` keeps its pole on its own +Y
   (``world_from_dome = R``), EXCEPT for the Blender case below.

Blender's USD exporter (5.0.1, ``convert_world_material=True``) writes the World's
Environment Texture as a ``DomeLight`` with ``xformOp:rotateXYZ = (90, 0, 90)`` when the
texture has a Mapping node (with zero rotation), and with ``xformOp:rotateXYZ = (0, 0, 0)``
when it has none (other descriptions of the exporter say no xform op at all; both are
handled), although Cycles lights the scene Z-up either way (confirmed with Cycles renders
of a chrome sphere: only this orientation matches). So on a Z-up stage a plain DomeLight
with no ``poleAxis`` whose world rotation is the identity (no xform ops, or ops that
cancel) is read as ``rotateXYZ(90, 0, 90)`` = ``Rz(90) @ Rx(90)``: the dome's +Y (pole)
maps to world +Z and the dome's +Z (image centre) to world +X, which is Blender's own
equirectangular convention (the image centre looks along +X, u = 0.25 along +Y). The
same default applies when a Z-up stage has no DomeLight and the job supplies an
environment image (:func:`default_world_from_dome`); on a Y-up stage the default is the
identity.

The texture file is resolved through the layer that authored it: USD's asset resolver
(``Sdf.AssetPath.resolvedPath``) when it finds the file; otherwise (typically a missing
file, so that the message can say where it was looked for) the authored path anchored to
the directory of the layer holding the opinion. Radiance is
``image * color * intensity * 2**exposure`` (times the blackbody colour when
``enableColorTemperature`` is set); Blender does not export the Background node's
Strength, so a Blender stage always has intensity 1.

Initial material
----------------
Read from the material bound to the mesh by :mod:`pbrfit.usd_material_reader` (its
docstring says which shader and which conventions); stages are opened by
:mod:`pbrfit.usd_open` (missing layers are errors; textures inside USDZ packages are read).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux

from .errors import InputError
from .scene import BLENDER_WORLD_FROM_DOME, Camera, Mesh, rotate_xyz
from .usd_material_reader import read_bound_material
from .usd_open import extract_packaged, is_package_path, open_stage, remove_extracted

__all__ = [
    "DomeLightInfo",
    "StageContents",
    "read_stage",
    "find_descendant",
    "open_stage",
    "is_package_path",
    "remove_extracted",
    "default_world_from_dome",
    "rotate_xyz",
]


def default_world_from_dome(up_axis: str) -> np.ndarray:
    """Dome orientation when nothing says otherwise: identity on a Y-up stage, Blender's
    ``rotateXYZ(90, 0, 90)`` (pole +Z, image centre +X) on a Z-up stage."""
    return BLENDER_WORLD_FROM_DOME.copy() if up_axis == "Z" else np.eye(3)


# --- results ------------------------------------------------------------------------------

@dataclass
class DomeLightInfo:
    """The stage's DomeLight.

    Attributes:
        prim_path: the DomeLight prim.
        texture: absolute path of ``inputs:texture:file``, or None when none is authored.
            The file may not exist: :meth:`texture_file` checks.
        texture_asset: the asset path as authored (for messages).
        texture_format: ``inputs:texture:format`` ("automatic", "latlong", ...).
        intensity, exposure: ``inputs:intensity`` and ``inputs:exposure``.
        color: (3,) ``inputs:color`` (times the blackbody colour if enabled), linear.
        world_from_dome: (3, 3) rotation, dome frame -> world (see the module docstring).
        pole_axis: the ``poleAxis`` value if the prim has one, else None.
        orientation_rule: how ``world_from_dome`` was decided, in words (for reports).
        stage_path: the stage it was read from (for messages).
    """

    prim_path: str
    texture: str | None
    texture_asset: str
    texture_format: str
    intensity: float
    exposure: float
    color: np.ndarray
    world_from_dome: np.ndarray
    pole_axis: str | None = None
    orientation_rule: str = ""
    stage_path: str = ""

    @property
    def scale(self) -> np.ndarray:
        """(3,) radiance multiplier: color * intensity * 2**exposure."""
        with np.errstate(over="ignore"):  # a huge exposure is inf here, refused by the job reader
            return np.asarray(self.color, dtype=np.float64) * self.intensity * np.exp2(self.exposure)

    def texture_file(self) -> Path:
        """The lat-long texture to light with.

        Raises:
            InputError: no texture authored, the file is missing, or not a lat-long format.
        """
        where = f"DomeLight {self.prim_path}" + (f" in {self.stage_path}" if self.stage_path else "")
        if not self.texture:
            raise InputError(f"{where} has no inputs:texture:file; give it an HDRI "
                             "or set environment = \"...\" on each view in the job")
        if self.texture_format not in ("automatic", "latlong"):
            raise InputError(f"{where} uses texture format '{self.texture_format}'; "
                             "only lat-long environment maps are supported, convert the texture")
        if is_package_path(self.texture):
            return extract_packaged(self.texture, where)
        path = Path(self.texture)
        if not path.is_file():
            raise InputError(f"{where}: texture '{self.texture_asset}' not found "
                             f"(looked for {path}); fix the path in the stage or copy the file there")
        return path


@dataclass
class StageContents:
    """What a fit needs from one USD stage.

    Attributes:
        path: the stage file.
        target: the Mesh prim actually read.
        mesh: the target, triangulated, in world space.
        cameras: every readable perspective camera, by prim path.
        dome: the DomeLight, or None when the stage has none.
        up_axis: "Y" or "Z".
        meters_per_unit: the stage's linear unit.
        material: canonical values of the material bound to the target (defaults filled in),
            or {} when nothing is bound or nothing could be read.
        material_source: the shader the values came from, e.g.
            "/root/_materials/M/Shader (OpenPBR)", or "".
        files: every layer file the stage composed (for provenance hashes).
        camera_problems: cameras that could not be used, by prim path, with the reason.
        time: the time code read, as a float, or None for the default time.
        stage: the open ``Usd.Stage`` (for adapters that need more).
        lights: the analytic lights (:func:`pbrfit.lights.read_lights`), besides the dome.
    """

    path: str
    target: str
    mesh: Mesh
    cameras: dict[str, Camera]
    dome: DomeLightInfo | None
    up_axis: str
    meters_per_unit: float
    material: dict = field(default_factory=dict)
    material_source: str = ""
    files: list[str] = field(default_factory=list)
    camera_problems: dict[str, str] = field(default_factory=dict)
    time: float | None = None
    stage: Usd.Stage | None = field(default=None, repr=False, compare=False)
    lights: tuple = ()

    def camera(self, path: str) -> Camera:
        """The camera at ``path`` (a Camera prim, or an ancestor holding exactly one).

        Raises:
            InputError: no such prim, not a camera, or a camera that cannot be used.
        """
        if path in self.cameras:
            return self.cameras[path]
        if path in self.camera_problems:
            raise InputError(self.camera_problems[path])
        where = f"in {self.path}"
        if not Sdf.Path.IsValidPathString(path) or not Sdf.Path(path).IsAbsolutePath():
            raise InputError(f"camera '{path}' is not an absolute prim path {where}; write it like /root/Camera")
        known = sorted(set(self.cameras) | set(self.camera_problems))
        below = [p for p in known if p.startswith(path.rstrip("/") + "/")]
        if len(below) == 1:
            return self.camera(below[0])
        listing = ", ".join(known[:10]) or "none"
        prim = self.stage.GetPrimAtPath(path) if self.stage is not None else None
        if prim is None or not prim.IsValid():
            raise InputError(f"camera {path} not found {where}; cameras there: {listing}")
        kind = prim.GetTypeName() or "typeless prim"
        extra = f" holding {len(below)} cameras ({', '.join(below[:10])}); name one" if below else ""
        raise InputError(f"camera {path} {where} is a {kind}, not a Camera{extra}; cameras there: {listing}")


# --- reading ------------------------------------------------------------------------------

def _time_code(time) -> Usd.TimeCode:
    if time is None:
        return Usd.TimeCode.Default()
    if isinstance(time, Usd.TimeCode):
        return time
    return Usd.TimeCode(float(time))


def _gf_to_column(m: Gf.Matrix4d) -> np.ndarray:
    """A USD (row-vector) 4x4 matrix as a column-vector (p' = M @ p) numpy matrix."""
    return np.array(m, dtype=np.float64).reshape(4, 4).T


def find_descendant(stage: Usd.Stage, path: str, schema, kind: str, stage_path) -> Usd.Prim:
    """The prim at ``path`` if it is a ``schema``, or its only ``schema`` descendant."""
    if not Sdf.Path.IsValidPathString(path) or not Sdf.Path(path).IsAbsolutePath():
        raise InputError(f"target '{path}' is not an absolute prim path; write it like /root/Part")
    prim = stage.GetPrimAtPath(path)
    if not prim or not prim.IsValid():
        everything = [str(p.GetPath()) for p in stage.Traverse() if p.IsA(schema)]
        raise InputError(f"target {path} not found in {stage_path}; {kind}es there: "
                         f"{', '.join(everything[:10]) or 'none'}")
    if not prim.IsActive():
        raise InputError(f"target {path} in {stage_path} is inactive; activate it or pick another prim")
    if prim.IsA(schema):
        return prim
    below = [p for p in Usd.PrimRange(prim) if p.IsA(schema)]
    if len(below) == 1:
        return below[0]
    kind_here = prim.GetTypeName() or "typeless prim"
    held = (f" holding {len(below)} {kind}es ({', '.join(str(p.GetPath()) for p in below[:10])}); name one"
            if below else f", and has no {kind} below it; name the part's {kind}")
    raise InputError(f"target {path} in {stage_path} is a {kind_here}, not a {kind}{held}")


def read_known_object(stage: Usd.Stage, path: str, time, stage_path, material: dict | None):
    """The Mesh at ``path`` (or the one below it) as a :class:`pbrfit.scene.KnownObject` with
    ``material`` (canonical names), or, when None, the material bound to it on the stage.

    Raises:
        InputError: the prim is missing or not a mesh, or has no material where none is given.
    """
    from .params import normalize_material
    from .scene import KnownObject

    prim = find_descendant(stage, path, UsdGeom.Mesh, "Mesh", stage_path)
    if material is None:
        material, source = read_bound_material(prim, _time_code(time))
        if not material:
            raise InputError(f"reference {path}: no material is bound to it on the stage; give its material in "
                             "the job: material = { base_color = [0.18, 0.18, 0.18], roughness = 1.0 }")
    return KnownObject(_read_mesh(prim, _time_code(time), stage_path), normalize_material(material,
                                                                                        source=f"reference {path}"))


def _find_target(stage: Usd.Stage, target: str | None, stage_path) -> Usd.Prim:
    if target is not None:
        return find_descendant(stage, target, UsdGeom.Mesh, "Mesh", stage_path)
    meshes = [p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    if len(meshes) == 1:
        return meshes[0]
    if not meshes:
        raise InputError(f"stage {stage_path} contains no Mesh; export the part as a mesh")
    names = ", ".join(str(p.GetPath()) for p in meshes[:10]) + (" ..." if len(meshes) > 10 else "")
    raise InputError(f"stage {stage_path} contains {len(meshes)} meshes ({names}); "
                     "set target = \"/path/to/Part\" in the job")


def _per_corner(values: np.ndarray, interpolation: str, corners: np.ndarray, face_of_tri: np.ndarray,
                vertex_of_corner: np.ndarray, n_faces: int, n_points: int, what: str) -> np.ndarray:
    """Gather (N, d) primvar ``values`` onto (T, 3) triangle corners.

    ``corners`` are face-vertex indices, ``vertex_of_corner`` is faceVertexIndices."""
    n = len(values)
    if interpolation == "constant":
        if n < 1:
            raise InputError(f"{what} has interpolation 'constant' but no value")
        return np.broadcast_to(values[0], corners.shape + values.shape[1:]).copy()
    if interpolation == "uniform":
        expected, index = n_faces, np.repeat(face_of_tri[:, None], 3, axis=1)
    elif interpolation in ("vertex", "varying"):
        expected, index = n_points, vertex_of_corner[corners]
    elif interpolation == "faceVarying":
        expected, index = len(vertex_of_corner), corners
    else:
        raise InputError(f"{what} has unknown interpolation '{interpolation}'")
    if n < expected:
        raise InputError(f"{what} has {n} values but interpolation '{interpolation}' needs {expected}; "
                         "re-export the mesh")
    return values[index]


def _primvar(prim: Usd.Prim, name: str, time):
    pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar(name)
    if pv and pv.HasAuthoredValue():
        value = pv.ComputeFlattened(time)
        if value is not None and len(value):
            return np.asarray(value, dtype=np.float64), pv.GetInterpolation(), f"primvars:{name}"
    return None


def _read_mesh(prim: Usd.Prim, time, stage_path, uv: str | None = None) -> Mesh:
    path = str(prim.GetPath())
    geom = UsdGeom.Mesh(prim)
    where = f"mesh {path} in {stage_path}"
    points = geom.GetPointsAttr().Get(time)
    counts = geom.GetFaceVertexCountsAttr().Get(time)
    indices = geom.GetFaceVertexIndicesAttr().Get(time)
    if points is None or len(points) == 0:
        raise InputError(f"{where} has no points; export the geometry")
    if counts is None or indices is None or len(counts) == 0:
        raise InputError(f"{where} has no faces; export the geometry")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    counts = np.asarray(counts, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise InputError(f"{where} has {int(bad.sum())} of {len(points)} points that are NaN or Inf; "
                         "fix the geometry")
    if counts.sum() != len(indices) or (counts < 0).any():
        raise InputError(f"{where}: faceVertexCounts add up to {int(counts.sum())} but there are "
                         f"{len(indices)} faceVertexIndices; re-export the mesh")
    if len(indices) and (indices.min() < 0 or indices.max() >= len(points)):
        raise InputError(f"{where}: faceVertexIndices refer to point {int(indices.max())} but there are "
                         f"{len(points)} points; re-export the mesh")

    # Triangle fans over face-vertex ("corner") indices, so faceVarying data can follow.
    n_faces = len(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = counts >= 3
    holes = geom.GetHoleIndicesAttr().Get(time)
    if holes is not None and len(holes):
        holes = np.asarray(holes, dtype=np.int64)
        keep[holes[(holes >= 0) & (holes < n_faces)]] = False
    n_tri = np.where(keep, counts - 2, 0)
    face_of_tri = np.repeat(np.arange(n_faces), n_tri)
    if len(face_of_tri) == 0:
        raise InputError(f"{where} has no faces with three or more vertices; fix the geometry")
    k = np.arange(len(face_of_tri)) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri)
    first = offsets[face_of_tri]
    corners = np.stack([first, first + k + 1, first + k + 2], axis=1)

    world = _gf_to_column(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time))
    linear = world[:3, :3]
    det = float(np.linalg.det(linear))
    if not math.isfinite(det) or abs(det) < 1e-300:
        raise InputError(f"{where} has a singular world transform (a zero scale); fix its xformOps")
    flip = (geom.GetOrientationAttr().Get(time) == UsdGeom.Tokens.leftHanded) != (det < 0)
    if flip:
        corners = corners[:, [0, 2, 1]]

    positions = points @ linear.T + world[:3, 3]
    triangles = indices[corners]
    a, b, c = (positions[triangles[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise InputError(f"{where} has zero surface area (all faces degenerate); fix the geometry")

    normals = None
    found = _primvar(prim, "normals", time)
    if found is None:
        raw = geom.GetNormalsAttr().Get(time)
        if raw is not None and len(raw):
            found = (np.asarray(raw, dtype=np.float64), geom.GetNormalsInterpolation(), "normals")
    if found is not None:
        values, interp, name = found
        local = _per_corner(values.reshape(-1, 3), interp, corners, face_of_tri, indices, n_faces,
                            len(points), f"{where}: {name}")
        n = local @ np.linalg.inv(linear)  # == (inverse transpose @ n) per row
        length = np.linalg.norm(n, axis=2, keepdims=True)
        geometric = np.cross(b - a, c - a)
        geometric /= np.maximum(np.linalg.norm(geometric, axis=1, keepdims=True), 1e-300)
        ok = np.isfinite(length) & (length > 1e-12)
        normals = np.where(ok, n / np.where(ok, length, 1.0), geometric[:, None, :])

    uvs = uv_name = None
    if uv is not None:
        pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar(uv)
        if not pv:
            raise InputError(f"{where} has no primvar '{uv}' for texture coordinates; the texCoord2f primvars there "
                             f"are: {', '.join(_uv_names(prim)[2:]) or 'none'} (fix uv in [textures])")
        if pv.GetTypeName().scalarType not in (Sdf.ValueTypeNames.TexCoord2f, Sdf.ValueTypeNames.Float2,
                                               Sdf.ValueTypeNames.TexCoord2d, Sdf.ValueTypeNames.Double2,
                                               Sdf.ValueTypeNames.TexCoord2h, Sdf.ValueTypeNames.Half2):
            raise InputError(f"{where}: primvars:{uv} is {pv.GetTypeName()}, not texture coordinates "
                             "(texCoord2f[]); name a texCoord2f primvar in [textures] uv")
    for name in ([uv] if uv is not None else _uv_names(prim)):
        found = _primvar(prim, name, time)
        if found is not None:
            values, interp, label = found
            uvs = _per_corner(values.reshape(len(values), -1)[:, :2], interp, corners, face_of_tri, indices,
                              n_faces, len(points), f"{where}: {label}")
            uv_name = name
            break
    if uv is not None and uvs is None:
        raise InputError(f"{where}: primvars:{uv} has no values; give it texture coordinates or name another primvar")

    return Mesh(positions=positions, triangles=triangles, normals=normals, uvs=uvs, prim_path=path,
                world_from_object=world, uv_name=uv_name)


def _uv_names(prim: Usd.Prim) -> list[str]:
    names = ["st", "UVMap"]
    others = sorted(pv.GetPrimvarName() for pv in UsdGeom.PrimvarsAPI(prim).GetPrimvars()
                    if pv.GetTypeName().role == "TextureCoordinate")
    return names + [n for n in others if n not in names]


def _rigid(world: np.ndarray, what: str) -> np.ndarray:
    """``world`` (4x4, column vectors) with a uniform scale removed.

    Raises InputError for a non-uniform scale, a shear, a mirror or a singular matrix.
    """
    linear = world[:3, :3]
    u, s, vt = np.linalg.svd(linear)
    if not np.isfinite(s).all() or s.min() <= 1e-12 * max(s.max(), 1e-300):
        raise InputError(f"{what} has a singular world transform (zero scale); fix its xformOps")
    if s.max() - s.min() > 1e-4 * s.max():
        raise InputError(f"{what} has a non-uniform scale or shear in its world transform "
                         f"(singular values {', '.join(f'{v:.4g}' for v in s)}); remove it")
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise InputError(f"{what} has a mirroring (negative scale) world transform; remove it")
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = world[:3, 3]
    return out


def _read_camera(prim: Usd.Prim, time, stage_path) -> Camera:
    path = str(prim.GetPath())
    what = f"camera {path} in {stage_path}"
    gf = UsdGeom.Camera(prim).GetCamera(time)
    if gf.projection != Gf.Camera.Perspective:
        raise InputError(f"{what} is orthographic; only perspective cameras are supported")
    focal, h_ap, v_ap = float(gf.focalLength), float(gf.horizontalAperture), float(gf.verticalAperture)
    for name, value in (("focalLength", focal), ("horizontalAperture", h_ap), ("verticalAperture", v_ap)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{what} has {name} = {value}; it must be positive, set the camera's lens/sensor")
    world = _gf_to_column(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time))
    if not np.isfinite(world).all():
        raise InputError(f"{what} has a NaN or Inf in its world transform; fix its xformOps")
    clip = gf.clippingRange
    return Camera(
        world_from_camera=_rigid(world, what),
        focal_length=focal,
        horizontal_aperture=h_ap,
        vertical_aperture=v_ap,
        horizontal_aperture_offset=float(gf.horizontalApertureOffset),
        vertical_aperture_offset=float(gf.verticalApertureOffset),
        clipping_range=(float(clip.min), float(clip.max)),
        prim_path=path,
    )


def _read_dome(stage: Usd.Stage, time, up_axis: str, stage_path) -> DomeLightInfo | None:
    domes = [p for p in stage.Traverse() if p.IsA(UsdLux.DomeLight) or p.IsA(UsdLux.DomeLight_1)]
    if not domes:
        return None
    if len(domes) > 1:
        raise InputError(f"stage {stage_path} has {len(domes)} DomeLights "
                         f"({', '.join(str(p.GetPath()) for p in domes[:10])}); deactivate all but one")
    prim = domes[0]
    path = str(prim.GetPath())
    what = f"DomeLight {path} in {stage_path}"
    is_v1 = prim.IsA(UsdLux.DomeLight_1)
    dome = UsdLux.DomeLight_1(prim) if is_v1 else UsdLux.DomeLight(prim)
    light = UsdLux.LightAPI(prim)

    def value(attr, default):
        v = attr.Get(time) if attr else None
        return default if v is None else v

    intensity = float(value(light.GetIntensityAttr(), 1.0))
    exposure = float(value(light.GetExposureAttr(), 0.0))
    color = np.array(value(light.GetColorAttr(), Gf.Vec3f(1, 1, 1)), dtype=np.float64)
    if value(light.GetEnableColorTemperatureAttr(), False):
        temperature = float(value(light.GetColorTemperatureAttr(), 6500.0))
        color = color * np.array(UsdLux.BlackbodyTemperatureAsRgb(temperature), dtype=np.float64)
    if not (np.isfinite(color).all() and math.isfinite(intensity) and math.isfinite(exposure)):
        raise InputError(f"{what} has a NaN or Inf intensity, exposure or color; fix the light")

    texture = None
    asset = ""
    attr = dome.GetTextureFileAttr()
    authored = attr.Get(time) if attr else None
    if authored is not None and authored.path:
        asset = authored.path
        texture = authored.resolvedPath or None
        if texture is None:  # unresolvable (usually missing): anchor it to the authoring layer
            stack = attr.GetPropertyStack(time)
            layer = stack[0].layer if stack else stage.GetRootLayer()
            anchor = Path(layer.realPath).parent if layer.realPath else Path.cwd()
            texture = os.path.normpath(anchor / asset)
    texture_format = str(value(dome.GetTextureFormatAttr(), "automatic"))

    world = _gf_to_column(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time))
    rotation = _rigid(world, what)[:3, :3]
    pole = None
    if is_v1:
        pole = str(value(dome.GetPoleAxisAttr(), "scene"))
    else:
        pole_attr = prim.GetAttribute("poleAxis")
        if pole_attr and pole_attr.HasAuthoredValue():
            pole = str(pole_attr.Get(time))
    if pole is not None:
        if pole not in ("scene", "Y", "Z"):
            raise InputError(f"{what} has poleAxis '{pole}'; use scene, Y or Z")
        pole_up = up_axis if pole == "scene" else pole
        align = rotate_xyz(90.0, 0.0, 0.0) if pole_up == "Z" else np.eye(3)
        world_from_dome = rotation @ align
        rule = f"poleAxis {pole} (pole on +{pole_up}) then the DomeLight's world rotation"
    elif up_axis == "Z" and np.allclose(rotation, np.eye(3), atol=1e-6):
        world_from_dome = BLENDER_WORLD_FROM_DOME.copy()
        rule = ("Z-up stage, DomeLight without rotation or poleAxis: Blender's convention "
                "rotateXYZ(90, 0, 90), image centre toward +X")
    else:
        world_from_dome = rotation
        rule = "the DomeLight's world rotation (pole on its +Y)"
    return DomeLightInfo(
        prim_path=path, texture=texture, texture_asset=asset, texture_format=texture_format,
        intensity=intensity, exposure=exposure, color=color, world_from_dome=world_from_dome,
        pole_axis=pole, orientation_rule=rule, stage_path=str(stage_path),
    )


def read_stage(path, *, target: str | None = None, time=Usd.TimeCode.Default(), uv: str | None = None) -> StageContents:
    """Read a USD stage for a fit (conventions in the module docstring).

    Args:
        path: the stage file (.usd, .usda, .usdc, .usdz), or an open ``Usd.Stage`` (a
            host's live stage, read as it is in memory, unsaved edits included).
        target: prim path of the part (a Mesh, or an ancestor holding exactly one); None
            when the stage has exactly one Mesh.
        time: a ``Usd.TimeCode``, a float frame, or None for the default time.
        uv: the primvar to read texture coordinates from (must exist), or None for the
            default order (``st``, ``UVMap``, the first texCoord2f primvar).

    Returns:
        :class:`StageContents`. ``dome`` is None when the stage has no DomeLight: whether
        that is an error is the caller's call.

    Raises:
        InputError: the stage is missing or unreadable; the target is missing, not a Mesh
            or degenerate; several DomeLights; a DomeLight with NaN settings or a mirrored
            or sheared transform.
    """
    time = _time_code(time)
    if isinstance(path, Usd.Stage):
        stage = path
        root = stage.GetRootLayer()
        path = Path(root.realPath) if root.realPath else Path(root.identifier)
    else:
        path = Path(path)
        stage = open_stage(path)
    up_axis = str(UsdGeom.GetStageUpAxis(stage))
    meters_per_unit = float(UsdGeom.GetStageMetersPerUnit(stage))
    mesh_prim = _find_target(stage, target, path)
    mesh = _read_mesh(mesh_prim, time, path, uv)
    cameras: dict[str, Camera] = {}
    problems: dict[str, str] = {}
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Camera):
            try:
                cameras[str(prim.GetPath())] = _read_camera(prim, time, path)
            except InputError as e:
                problems[str(prim.GetPath())] = str(e)
    dome = _read_dome(stage, time, up_axis, path)
    from .lights import read_lights  # torch: imported when a stage is read, not with this module

    try:
        lights = tuple(read_lights(stage, time))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    material, source = read_bound_material(mesh_prim, time)
    files = []
    for layer in stage.GetUsedLayers():
        if not layer.anonymous and layer.realPath:
            files.append(str(Path(layer.realPath).resolve()))
    return StageContents(
        path=str(path), target=str(mesh_prim.GetPath()), mesh=mesh, cameras=cameras, dome=dome,
        up_axis=up_axis, meters_per_unit=meters_per_unit, material=material, material_source=source,
        files=sorted(set(files)), camera_problems=problems,
        time=None if time.IsDefault() else float(time.GetValue()), stage=stage, lights=lights,
    )
