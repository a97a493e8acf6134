"""The engine's scene: what a material fit needs, free of any host or file format.

Conventions (every reader must produce these, every renderer consumes them):

* World space is the stage's own world space: its up axis (``up_axis``, "Y" or "Z") and its
  units (``meters_per_unit``). Nothing is converted; the environment's rotation carries the
  up axis.
* Cameras follow USD: in camera space the camera looks down -Z with +Y up and +X right.
  Intrinsics are USD's aperture/focal-length pairs (any unit, they cancel); the horizontal
  field of view is ``2 * atan(horizontal_aperture / (2 * focal_length))``.
* Images are linear, scene-referred Rec.709 RGB, float32, shape (H, W, 3), row 0 at the top.
  Masks are float32 (H, W) in [0, 1]; 1 = the target object covers the pixel.
* The environment is a lat-long (equirectangular) radiance image, row 0 at the top, in the
  *dome frame* of UsdLuxDomeLight: +Y is the pole (top row), the image centre (u = 0.5)
  looks toward +Z, u = 0.25 toward +X and u = 0.75 toward -X (u grows to the right).
  ``world_from_dome`` rotates dome-frame directions into world space. Radiance is
  ``image * color * intensity * 2**exposure``, folded into ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Mesh", "Camera", "Environment", "View", "FitScene", "rotate_xyz", "BLENDER_WORLD_FROM_DOME"]


def rotate_xyz(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    """USD's ``xformOp:rotateXYZ`` as a 3x3 column-vector matrix: X first, then Y, then Z
    (angles in degrees)."""
    def axis(deg, i, j):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    return axis(z_deg, 0, 1) @ axis(y_deg, 2, 0) @ axis(x_deg, 1, 2)


#: Blender's World orientation in the dome frame: its equirectangular lookup puts the image
#: centre toward +X and the top row toward +Z of a Z-up world, which is
#: ``rotateXYZ(90, 0, 90)`` applied to the dome frame (what Blender's USD exporter writes).
BLENDER_WORLD_FROM_DOME = rotate_xyz(90.0, 0.0, 90.0)


@dataclass
class Mesh:
    """A triangle mesh in world space.

    Attributes:
        positions: (V, 3) float64 vertex positions, world space, scene units.
        triangles: (F, 3) int64 vertex indices, counter-clockwise seen from the front.
        normals: (F, 3, 3) float64 per-corner shading normals in world space (unit), or None
            for flat shading.
        uvs: (F, 3, 2) float64 per-corner texture coordinates, or None.
        prim_path: where the mesh came from (for messages).
        world_from_object: (4, 4) float64 transform of the mesh prim (column vectors), or None
            when the positions are the object's own. Needed for Blender's default tangent
            (radial around the object's local Z axis over its bounding box).
        uv_name: the primvar ``uvs`` came from (without ``primvars:``), or None.
    """

    positions: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    prim_path: str = ""
    world_from_object: np.ndarray | None = None
    uv_name: str | None = None


def merge_meshes(meshes: list[Mesh]) -> Mesh:
    """One mesh of the positions and triangles of ``meshes`` (no normals or UVs: for occlusion)."""
    offsets = np.cumsum([0] + [len(m.positions) for m in meshes])[:-1]
    return Mesh(positions=np.concatenate([m.positions for m in meshes]),
                triangles=np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                prim_path=", ".join(m.prim_path for m in meshes))


@dataclass
class KnownObject:
    """An object of known material in view besides the part (a grey card, a reference sphere):
    what lets a calibration tell the lighting's level and colour from the part's albedo
    (:mod:`pbrfit.calibration`).

    Attributes:
        mesh: its mesh, world space.
        material: its material, canonical names (:data:`pbrfit.params.PARAMETERS`), complete.
    """

    mesh: Mesh
    material: dict


@dataclass
class Camera:
    """A pinhole camera (USD UsdGeomCamera semantics).

    Attributes:
        world_from_camera: (4, 4) float64 rigid transform (column vectors: p_world = M @ p_cam).
        focal_length, horizontal_aperture, vertical_aperture: same unit, any unit.
        horizontal_aperture_offset, vertical_aperture_offset: lens shift, aperture units.
        clipping_range: (near, far) in scene units.
        prim_path: the camera prim.
    """

    world_from_camera: np.ndarray
    focal_length: float
    horizontal_aperture: float
    vertical_aperture: float
    horizontal_aperture_offset: float = 0.0
    vertical_aperture_offset: float = 0.0
    clipping_range: tuple[float, float] = (0.01, 1e6)
    prim_path: str = ""

    @property
    def aspect(self) -> float:
        """Width over height of the aperture."""
        return self.horizontal_aperture / self.vertical_aperture


@dataclass
class Environment:
    """Distant lighting from a lat-long HDRI (see the module docstring for the dome frame).

    Attributes:
        image: (H, W, 3) float32 linear radiance, row 0 = +Y pole of the dome frame.
        world_from_dome: (3, 3) float64 rotation.
        scale: (3,) float64 multiplier: color * intensity * 2**exposure.
        source: file the image came from.
    """

    image: np.ndarray
    world_from_dome: np.ndarray = field(default_factory=lambda: np.eye(3))
    scale: np.ndarray = field(default_factory=lambda: np.ones(3))
    source: str = ""


@dataclass
class View:
    """One reference photograph: a camera, the lighting it was taken under, the image.

    Attributes:
        name: short label used in reports (defaults to the camera's prim name).
        camera: the calibrated camera.
        environment: the lighting.
        image: (H, W, 3) float32 linear reference.
        mask: (H, W) float32 object mask in [0, 1], or None to use the mesh's silhouette.
        split: "train" or "validate".
        image_path: the reference's file.
        lights: the analytic lights besides the environment (:class:`pbrfit.lights.AnalyticLight`).
        exposure: how the photo's values relate to the lighting's radiance: a number of stops
            already divided out of ``image`` (0: the same units), or "auto": a scale the fit
            finds (:meth:`pbrfit.fit_run.FitRun.update_exposures`).
        clipped: (H, W) bool, pixels where the photo (an integer file or a RAW) reached its
            maximum in a channel: their value is a lower bound, so they and their neighbours are
            left out of losses and metrics; None when nothing clipped (or a float file).
    """

    name: str
    camera: Camera
    environment: Environment
    image: np.ndarray
    mask: np.ndarray | None = None
    split: str = "train"
    image_path: str = ""
    lights: tuple = ()
    exposure: float | str = 0.0
    clipped: np.ndarray | None = None

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class FitScene:
    """Everything a fit reads.

    Attributes:
        mesh: the target part.
        views: reference views, train and validate.
        up_axis: "Y" or "Z", the stage's up axis.
        meters_per_unit: the stage's linear unit.
        initial_material: canonical-name values of the material bound to the target, or {}.
        initial_material_source: where the initial guess came from (e.g. a shader prim path).
        target: the target prim path.
        stage_path: the USD stage read.
        notes: what reading changed that the user should know (e.g. an image downsampled
            to the working resolution), ``{severity, about, message}``; a fit passes them on
            to its result.
        known: objects of known material in view (:class:`KnownObject`): they hide the part
            where they are in front of it, and the calibration fits the lighting to them.
    """

    mesh: Mesh
    views: list[View]
    up_axis: str = "Y"
    meters_per_unit: float = 1.0
    initial_material: dict = field(default_factory=dict)
    initial_material_source: str = ""
    target: str = ""
    stage_path: str = ""
    notes: list = field(default_factory=list)
    known: tuple = ()

    def split(self, name: str) -> list[View]:
        return [v for v in self.views if v.split == name]
