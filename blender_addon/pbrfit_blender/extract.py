"""The one translator from Blender data to the engine's scene (:mod:`pbrfit.scene`).

What is read, and the conventions it is turned into:

* **Mesh**: the target object *evaluated* through the depsgraph (modifiers applied),
  triangulated with Blender's own loop triangles, in world space (``matrix_world``
  applied; triangles flipped when the matrix mirrors, so they stay counter-clockwise seen
  from the front). Per-corner shading normals are Blender's corner normals (smooth/flat,
  sharp edges, custom normals) transformed by the inverse transpose; per-corner UVs come
  from the active UV map. ``world_from_object`` is ``matrix_world``.
* **Cameras**: every camera object whose camera data has an enabled background image
  holding an image; that image is the view's photograph. Pose: ``matrix_world`` with its
  (uniform) scale removed; Blender cameras look down their local -Z with +Y up, as USD's
  do. Intrinsics in millimetres: the sensor is fitted as Blender does (``sensor_fit``
  AUTO: ``sensor_width`` spans the larger side of the render frame, whose aspect is
  ``resolution_x * pixel_aspect_x : resolution_y * pixel_aspect_y``; HORIZONTAL:
  ``sensor_width`` spans the width; VERTICAL: ``sensor_height`` spans the height).
  ``shift_x``/``shift_y`` are fractions of the fitted sensor side (the larger side for
  AUTO) and become USD aperture offsets in millimetres. Clipping from ``clip_start`` /
  ``clip_end``.
* **Lighting**: the World's node tree, World Output <- Background <- Environment Texture
  (equirectangular), optionally <- Mapping (its Rotation, Euler XYZ radians) <- Texture
  Coordinate. Cycles looks a world direction ``d`` up as ``t = R_map d`` (Mapping types
  POINT/VECTOR; ``R_map^T d`` for TEXTURE), and in the image the centre faces ``t = +X``,
  u = 0.25 faces +Y and the top row +Z; UsdLux's dome frame is turned onto that lookup by
  ``rotateXYZ(90, 0, 90)``. So ``world_from_dome = R_map^T @ rotateXYZ(90, 0, 90)`` (what
  Blender's USD exporter writes on the DomeLight too: checked in the tests). The
  Background's Strength is the radiance ``scale`` (a grey multiplier). A Mapping Location
  (POINT/TEXTURE types) or a non-uniform Scale would bend directions: an error.
* **Lamps**: every lamp visible in renders, besides the World (:func:`extract_lights`: the
  conventions of Blender's USD exporter and importer, which ``pbrfit.lights`` renders as Cycles
  does).
* **Validation views** (``scene.pbrfit.validation_views``): a camera, a photograph and an
  HDRI image lit with the World's orientation and strength; split ``"validate"``.
* **Initial material**: the Principled BSDF feeding the active material's output, read
  under canonical names (:data:`pbrfit_blender.sockets.SOCKETS`).

Images: an image with a file on disk is read by :mod:`pbrfit.images` from its absolute
path (EXR/HDR linear, PNG/JPEG sRGB-decoded, alpha premultiplied); a packed or generated
image is read from ``Image.pixels`` (float images as linear, byte images sRGB-decoded
unless their colour space is Non-Color/Linear), flipped to row 0 at the top. A
photograph's alpha is its mask unless it is fully opaque (as in :mod:`pbrfit.job`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import bpy
import numpy as np

from pbrfit.errors import InputError
from pbrfit.images import check_mask, read_environment, read_image, srgb_to_linear
from pbrfit.params import PARAMETERS, normalize_material
from pbrfit.scene import BLENDER_WORLD_FROM_DOME, Camera, Environment, FitScene, Mesh, View, rotate_xyz

from .sockets import SOCKETS

__all__ = [
    "Extraction",
    "extract_scene",
    "extract_mesh",
    "extract_camera",
    "extract_environment",
    "background_image",
    "find_principled",
    "read_principled",
    "world_from_dome_for_mapping",
    "image_pixels",
    "BLENDER_TEXTURE_FROM_DOME",
]

#: Blender's equirectangular lookup frame in UsdLux dome terms (see the module docstring).
BLENDER_TEXTURE_FROM_DOME = BLENDER_WORLD_FROM_DOME


@dataclass
class Extraction:
    """An extracted scene and what was left out.

    Attributes:
        scene: the engine scene.
        skipped: one line per camera (or validation entry) that was not used, with why.
    """

    scene: FitScene
    skipped: list[str] = field(default_factory=list)


def _matrix(m) -> np.ndarray:
    return np.array([[m[i][j] for j in range(4)] for i in range(4)], dtype=np.float64)


# --- mesh ------------------------------------------------------------------------------------

def extract_mesh(obj, depsgraph) -> Mesh:
    """The evaluated, triangulated mesh of ``obj`` in world space (see the module doc).

    Raises:
        InputError: not a mesh object, or no faces.
    """
    if obj.type != "MESH":
        raise InputError(f"object '{obj.name}' is a {obj.type.lower()}, not a mesh; select the part's mesh object")
    evaluated = obj.evaluated_get(depsgraph)
    me = evaluated.to_mesh()
    try:
        me.calc_loop_triangles()
        n_tri = len(me.loop_triangles)
        if n_tri == 0:
            raise InputError(f"object '{obj.name}' has no faces after its modifiers; give it geometry")
        co = np.empty(len(me.vertices) * 3, np.float64)
        me.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        tri = np.empty(n_tri * 3, np.int64)
        me.loop_triangles.foreach_get("vertices", tri)
        tri = tri.reshape(-1, 3)
        loops = np.empty(n_tri * 3, np.int64)
        me.loop_triangles.foreach_get("loops", loops)
        loops = loops.reshape(-1, 3)
        cn = np.empty(len(me.loops) * 3, np.float64)
        me.corner_normals.foreach_get("vector", cn)
        cn = cn.reshape(-1, 3)
        uvs = uv_name = None
        layer = me.uv_layers.active
        if layer is not None:
            uv_name = layer.name
            uv = np.empty(len(me.loops) * 2, np.float64)
            layer.data.foreach_get("uv", uv)
            uvs = uv.reshape(-1, 2)[loops]
    finally:
        evaluated.to_mesh_clear()

    world = _matrix(obj.matrix_world)
    linear = world[:3, :3]
    det = float(np.linalg.det(linear))
    if not math.isfinite(det) or abs(det) < 1e-300:
        raise InputError(f"object '{obj.name}' has a zero scale; fix its transform")
    positions = co @ linear.T + world[:3, 3]
    normals = cn[loops] @ np.linalg.inv(linear)  # inverse transpose, row vectors
    normals /= np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), 1e-300)
    if det < 0:  # a mirror turns the winding around
        tri, normals = tri[:, [0, 2, 1]], normals[:, [0, 2, 1]]
        uvs = uvs[:, [0, 2, 1]] if uvs is not None else None
    return Mesh(positions=positions, triangles=tri, normals=normals, uvs=uvs, prim_path=obj.name,
                world_from_object=world, uv_name=uv_name)


# --- cameras ---------------------------------------------------------------------------------

def _rigid(world: np.ndarray, what: str) -> np.ndarray:
    u, s, vt = np.linalg.svd(world[:3, :3])
    if s.min() <= 1e-12 * max(s.max(), 1e-300) or s.max() - s.min() > 1e-4 * s.max():
        raise InputError(f"{what} has a zero or non-uniform scale; clear its scale (Alt+S)")
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        raise InputError(f"{what} has a negative scale; clear its scale (Alt+S)")
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, world[:3, 3]
    return out


def extract_camera(obj, render) -> Camera:
    """A Blender camera object as a USD-convention pinhole (millimetre apertures).

    Args:
        obj: the camera object.
        render: ``scene.render`` (resolution and pixel aspect decide the frame's aspect).

    Raises:
        InputError: not a perspective camera, or a scaled/mirrored camera.
    """
    cam = obj.data
    what = f"camera '{obj.name}'"
    if cam.type != "PERSP":
        raise InputError(f"{what} is {cam.type.lower()}; only perspective cameras are supported")
    w = render.resolution_x * render.pixel_aspect_x
    h = render.resolution_y * render.pixel_aspect_y
    fit = cam.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if w >= h else "VERTICAL"
        size = cam.sensor_width
    else:
        size = cam.sensor_width if fit == "HORIZONTAL" else cam.sensor_height
    if fit == "HORIZONTAL":
        h_ap, v_ap = size, size * h / w
    else:
        h_ap, v_ap = size * w / h, size
    return Camera(
        world_from_camera=_rigid(_matrix(obj.matrix_world), what),
        focal_length=float(cam.lens),
        horizontal_aperture=float(h_ap),
        vertical_aperture=float(v_ap),
        horizontal_aperture_offset=float(cam.shift_x * size),
        vertical_aperture_offset=float(cam.shift_y * size),
        clipping_range=(float(cam.clip_start), float(cam.clip_end)),
        prim_path=obj.name,
    )


def background_image(camera_obj):
    """The camera's photograph: its first enabled background image that holds an image, or None."""
    for bg in camera_obj.data.background_images:
        if bg.show_background_image and bg.source == "IMAGE" and bg.image is not None:
            return bg.image
    return None


# --- images ----------------------------------------------------------------------------------

def image_pixels(image, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, alpha) of a Blender image: linear Rec.709, premultiplied, row 0 at the top.

    Files on disk go through :func:`pbrfit.images.read_image`; packed or generated images
    are read from ``Image.pixels``.
    """
    path = bpy.path.abspath(image.filepath_raw or image.filepath, library=image.library) if (
        image.filepath_raw or image.filepath) else ""
    if image.packed_file is None and image.source == "FILE" and path and os.path.isfile(path):
        return read_image(path)
    w, h = image.size
    if w == 0 or h == 0:
        raise InputError(f"{what}: image '{image.name}' has no pixels (file {path or 'none'} missing?); "
                         "reload or relink it")
    px = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)[::-1]
    rgb, alpha = px[..., :3].copy(), px[..., 3].copy()
    linear_spaces = {"Non-Color", "Linear Rec.709", "Linear", "Raw", "Linear CIE-XYZ E"}
    if not image.is_float and image.colorspace_settings.name not in linear_spaces:
        rgb = srgb_to_linear(rgb)
    if not image.is_float:
        rgb *= alpha[..., None]  # byte buffers hold straight alpha
    if not np.isfinite(rgb).all():
        raise InputError(f"{what}: image '{image.name}' has NaN or Inf pixels; fix the image")
    has_alpha = image.channels == 4 and float(alpha.min()) < 1.0 - 1e-6
    return np.ascontiguousarray(rgb, np.float32), (np.ascontiguousarray(alpha) if has_alpha else None)


def _environment_pixels(image, what: str) -> np.ndarray:
    path = bpy.path.abspath(image.filepath, library=image.library) if image.filepath else ""
    if image.packed_file is None and image.source == "FILE" and path and os.path.isfile(path):
        return read_environment(path)
    rgb, _ = image_pixels(image, what)
    h, w = rgb.shape[:2]
    if abs(w / h - 2.0) > 0.02:
        raise InputError(f"{what}: image '{image.name}' is {w}x{h}; an equirectangular HDRI must be 2:1")
    return rgb


def _image_source(image) -> str:
    if image.packed_file is not None or not image.filepath:
        return f"<blender image {image.name}>"
    return bpy.path.abspath(image.filepath, library=image.library)


# --- world -----------------------------------------------------------------------------------

def world_from_dome_for_mapping(rotation_xyz_rad, vector_type: str = "POINT") -> np.ndarray:
    """``world_from_dome`` for a World whose Environment Texture is fed by a Mapping node.

    Args:
        rotation_xyz_rad: the Mapping node's Rotation (Euler XYZ, radians), or None for none.
        vector_type: the Mapping node's type; TEXTURE applies the inverse rotation.
    """
    if rotation_xyz_rad is None:
        return BLENDER_TEXTURE_FROM_DOME.copy()
    r_map = rotate_xyz(*(math.degrees(a) for a in rotation_xyz_rad))
    world_from_texture = r_map if vector_type == "TEXTURE" else r_map.T
    return world_from_texture @ BLENDER_TEXTURE_FROM_DOME


def _linked_node(socket):
    return socket.links[0].from_node if socket.is_linked and socket.links else None


def _world_nodes(world):
    """(environment texture node, background node, mapping node or None)."""
    if world is None or world.node_tree is None:
        raise InputError("the scene has no World node tree; add a World with an Environment Texture (HDRI)")
    nodes = world.node_tree.nodes
    outputs = [n for n in nodes if n.bl_idname == "ShaderNodeOutputWorld"]
    out = next((n for n in outputs if n.is_active_output), outputs[0] if outputs else None)
    background = _linked_node(out.inputs["Surface"]) if out else None
    if background is None or background.bl_idname != "ShaderNodeBackground":
        raise InputError(f"World '{world.name}': its World Output must be fed by a Background node "
                         "(Environment Texture -> Background -> World Output)")
    env = _linked_node(background.inputs["Color"])
    if env is None or env.bl_idname != "ShaderNodeTexEnvironment" or env.image is None:
        raise InputError(f"World '{world.name}': the Background's Color must come from an Environment "
                         "Texture with an HDRI image")
    if env.projection != "EQUIRECTANGULAR":
        raise InputError(f"World '{world.name}': the Environment Texture uses {env.projection} projection; "
                         "use Equirectangular")
    mapping = _linked_node(env.inputs["Vector"])
    if mapping is not None and mapping.bl_idname != "ShaderNodeMapping":
        mapping = None
    if background.inputs["Strength"].is_linked:
        raise InputError(f"World '{world.name}': the Background's Strength is driven by a link; "
                         "set it to a number")
    return env, background, mapping


def _world_orientation(world) -> tuple[np.ndarray, float]:
    env, background, mapping = _world_nodes(world)
    if mapping is None:
        rot = world_from_dome_for_mapping(None)
    else:
        where = f"World '{world.name}': Mapping node '{mapping.name}'"
        for name in ("Location", "Rotation", "Scale"):
            socket = mapping.inputs.get(name)
            if socket is not None and socket.is_linked:
                raise InputError(f"{where} has its {name} driven by a link; set it to numbers")
        loc, scale = mapping.inputs.get("Location"), mapping.inputs.get("Scale")
        if loc is not None and mapping.vector_type in ("POINT", "TEXTURE") and any(
                abs(v) > 1e-9 for v in loc.default_value):
            raise InputError(f"{where} has a Location, which bends the HDRI's directions; set it to 0")
        if scale is not None:
            sv = tuple(scale.default_value)
            if min(sv) <= 0 or max(sv) - min(sv) > 1e-6 * max(sv):
                raise InputError(f"{where} has a non-uniform or negative Scale {sv}; set it to (1, 1, 1)")
        rot = world_from_dome_for_mapping(tuple(mapping.inputs["Rotation"].default_value), mapping.vector_type)
    return rot, float(background.inputs["Strength"].default_value)


def extract_environment(world, image=None) -> Environment:
    """The World's lighting, or ``image`` lit with the World's orientation and strength."""
    env, _, _ = _world_nodes(world)
    rot, strength = _world_orientation(world)
    image = image or env.image
    pixels = _environment_pixels(image, f"World '{world.name}'")
    return Environment(image=pixels, world_from_dome=rot, scale=np.full(3, strength, np.float64),
                       source=_image_source(image))


# --- material --------------------------------------------------------------------------------

def find_principled(material):
    """The Principled BSDF node that feeds ``material``'s output (else its only one), or None."""
    if material is None or material.node_tree is None:
        return None
    nodes = material.node_tree.nodes
    outs = [n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial"]
    out = next((n for n in outs if n.is_active_output), outs[0] if outs else None)
    if out is not None:
        node = _linked_node(out.inputs["Surface"])
        if node is not None and node.bl_idname == "ShaderNodeBsdfPrincipled":
            return node
    found = [n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"]
    return found[0] if len(found) == 1 else None


def read_principled(node) -> dict:
    """Canonical values of a Principled BSDF node's unlinked inputs (defaults elsewhere)."""
    values = {}
    for name, socket_name in SOCKETS.items():
        socket = node.inputs[socket_name]
        if socket.is_linked:
            continue
        v = socket.default_value
        values[name] = [float(c) for c in v][:3] if PARAMETERS[name].size == 3 else float(v)
    return values


def _principled_of(obj):
    mat = obj.active_material
    if mat is None:
        raise InputError(f"object '{obj.name}' has no material; give it a material with a Principled BSDF")
    node = find_principled(mat)
    if node is None:
        raise InputError(f"material '{mat.name}' on object '{obj.name}' has no Principled BSDF feeding its "
                         "output; connect a Principled BSDF to the Material Output")
    return mat, node


# --- the scene -------------------------------------------------------------------------------

def _view(name, cam_obj, image, environment, render, split, lights=()) -> View:
    camera = extract_camera(cam_obj, render)
    rgb, alpha = image_pixels(image, f"camera '{cam_obj.name}'")
    mask = None
    if alpha is not None:
        check_mask(alpha, f"(alpha of image '{image.name}')")
        mask = alpha
    h, w = rgb.shape[:2]
    frame = render.resolution_x / render.resolution_y  # pixels; the pixel aspect is in the aperture
    if abs((w / h) - frame) > 0.01 * frame:
        raise InputError(f"camera '{cam_obj.name}': image '{image.name}' is {w}x{h} but the render frame is "
                         f"{render.resolution_x}x{render.resolution_y}; make their aspect ratios match")
    return View(name=name, camera=camera, environment=environment, image=rgb, mask=mask, split=split,
                image_path=_image_source(image), lights=lights)


def extract_lights(scene) -> tuple:
    """The scene's lamps (visible in renders) as :class:`pbrfit.lights.AnalyticLight`, exactly
    as Blender's USD exporter writes them and its importer reads them back
    (``docs/lights-conventions.md``): strength ``S = color * energy * 2**exposure`` becomes
    the UsdLux intensity the exporter writes (``S / 4`` for a sun, ``S / pi`` otherwise), which
    :func:`pbrfit.lights.usd_light` turns into radiance as for any USD light: a sun is
    irradiance ``S`` over its cone (half of ``angle``); a point lamp of radius r a sphere of
    radiance ``S / (4 pi^2 r^2)`` (a point of ``S / (4 pi)`` W/sr at radius 0); an area lamp
    ``S / (pi A)`` from its front (-Z); "normalize" off drops the area. Distances in Blender
    units, as Cycles takes them. Soft Falloff (on by default for new point lamps) is rendered
    as a sphere lamp (Cycles' soft falloff is up to ~6% brighter within a few radii).

    A spot lamp is the point lamp times Cycles' spot ramp (half its spot size, its blend).

    Raises:
        InputError: a lamp with no light or no size.
    """
    import math

    from pbrfit.lights import usd_light

    out = []
    for obj in sorted((o for o in scene.objects if o.type == "LIGHT" and not o.hide_render), key=lambda o: o.name):
        lamp = obj.data
        what = f"lamp '{obj.name}'"
        exposure = float(getattr(lamp, "exposure", 0.0))
        strength = np.asarray(lamp.color, np.float64) * float(lamp.energy) * 2.0**exposure
        if getattr(lamp, "use_temperature", False):  # Blender 4.5+: Cycles multiplies by the blackbody colour
            strength = strength * np.asarray(lamp.temperature_color, np.float64)
        if not (float(lamp.energy) > 0 and math.isfinite(float(lamp.energy))) or not strength.any():
            raise InputError(f"{what} has power {lamp.energy:g} and colour {tuple(lamp.color)}: no light; give it a "
                             "positive power or hide it from renders")
        normalize = bool(getattr(lamp, "normalize", True))
        world = _matrix(obj.matrix_world)
        cols = world[:3, :3]
        scale = np.linalg.norm(cols, axis=0)
        axes = cols / np.where(scale > 0, scale, 1.0)
        position = world[:3, 3]
        if lamp.type == "SUN":
            kind, size = "distant", (float(lamp.angle) / 2,)
        elif lamp.type in ("POINT", "SPOT"):
            r = float(lamp.shadow_soft_size)
            kind, size = ("point", (0.0,)) if r <= 0 else ("sphere", (r,))
        else:  # AREA
            sx, sy = float(lamp.size) * scale[0], float(lamp.size_y) * scale[1]
            if lamp.shape in ("DISK", "ELLIPSE"):
                kind, size = "disk", ((sx + (sy if lamp.shape == "ELLIPSE" else sx)) / 4,)
            else:
                kind, size = "rect", (sx, sy if lamp.shape == "RECTANGLE" else float(lamp.size) * scale[1])
            if min(size) <= 0:
                raise InputError(f"{what} has zero size; give it a size or hide it from renders")
        # the UsdLux intensity Blender's exporter writes: strength / 4 for a sun, / pi otherwise
        x = strength / (4.0 if lamp.type == "SUN" else math.pi)
        cone = (float(lamp.spot_size) / 2, float(lamp.spot_blend)) if lamp.type == "SPOT" else ()
        out.append(usd_light(kind, obj.name, x, normalize, position, axes, size, 1.0, cone))
    return tuple(out)


def extract_scene(context, obj, *, depsgraph=None) -> Extraction:
    """Everything a fit of ``obj``'s material needs, from the Blender scene.

    Args:
        context: ``bpy.context`` (its scene and evaluated depsgraph are used).
        obj: the target mesh object.
        depsgraph: an evaluated depsgraph (default ``context.evaluated_depsgraph_get()``).

    Returns:
        :class:`Extraction`: the scene, and one line per camera that was skipped.

    Raises:
        InputError: no Principled BSDF, no World HDRI, or no camera with a background image.
    """
    scene = context.scene
    depsgraph = depsgraph or context.evaluated_depsgraph_get()
    mat, node = _principled_of(obj)
    initial = normalize_material(read_principled(node), source=f"material '{mat.name}'")
    mesh = extract_mesh(obj, depsgraph)
    environment = extract_environment(scene.world)
    lights = extract_lights(scene)
    views, skipped = [], []
    for cam_obj in sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name):
        image = background_image(cam_obj)
        if image is None:
            skipped.append(f"camera '{cam_obj.name}' has no enabled background image (the photograph); skipped")
            continue
        views.append(_view(cam_obj.name, cam_obj, image, environment, scene.render, "train", lights))
    if not views:
        raise InputError("no camera has a background image; add the photograph to a camera "
                         "(Camera properties > Background Images)")
    settings = getattr(scene, "pbrfit", None)
    for i, entry in enumerate(settings.validation_views if settings is not None else []):
        if entry.camera is None or entry.camera.type != "CAMERA" or entry.image is None or entry.hdri is None:
            skipped.append(f"validation view {i + 1} needs a camera, an image and an HDRI; skipped")
            continue
        env = extract_environment(scene.world, entry.hdri)
        views.append(_view(f"{entry.camera.name}@{entry.hdri.name}", entry.camera, entry.image, env,
                           scene.render, "validate", lights))
    fit_scene = FitScene(mesh=mesh, views=views, up_axis="Z",
                         meters_per_unit=float(scene.unit_settings.scale_length),
                         initial_material=initial,
                         initial_material_source=f"material '{mat.name}' ({node.name})",
                         target=obj.name, stage_path=bpy.data.filepath)
    return Extraction(fit_scene, skipped)
