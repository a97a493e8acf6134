"""Per-view surface geometry both renderers share: the G-buffer.

Geometry and cameras are fixed during a material fit, so each view's surface data is
computed once, by ray casting one ray through each pixel centre (:func:`camera_rays`,
:mod:`pbrfit.raycast`): position, geometric normal, shading frame and view direction of
every pixel the part covers (:class:`ViewGeometry`). The path backend's later bounces use
the same interpolation at any ray hit (:func:`surface_points`).

Frames: world space; a shading frame's rows are tangent, bitangent and shading normal, so
``local = frame @ world``; ``wo`` points back along the ray. Cameras follow USD: they look
down -Z with +Y up, lens and apertures in the same unit.

Tangents follow Blender's default for an unconnected Tangent input: radial around the
mesh object's local Z axis, over the object's bounding box (Cycles' TangentNode, radial, Z),
then made orthogonal to the shading normal. ``anisotropic_rotation`` turns it about the
normal (handled by the BSDF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import pixel_filter
from .errors import InputError
from .raycast import RayCaster
from .scene import Camera, Mesh, View

__all__ = ["camera_rays", "SurfacePoints", "surface_points", "ViewGeometry", "view_geometry", "uv_tangents",
           "tangent_basis"]


def camera_rays(camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixel centres, row-major from the top-left pixel.

    Returns:
        origins (H*W, 3) and unit directions (H*W, 3), float64.
    """
    j = (np.arange(width) + 0.5) / width * 2 - 1
    i = 1 - (np.arange(height) + 0.5) / height * 2
    x = j[None, :] * camera.horizontal_aperture / 2 + camera.horizontal_aperture_offset
    y = i[:, None] * camera.vertical_aperture / 2 + camera.vertical_aperture_offset
    x, y = np.broadcast_arrays(x, y)
    d = np.stack([x, y, -np.full_like(x, camera.focal_length)], -1).reshape(-1, 3)
    m = np.asarray(camera.world_from_camera, dtype=np.float64)
    d = d @ m[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(m[:3, 3], d.shape).copy()
    return o, d


_TANGENT_FRAMES: dict[int, tuple] = {}


def _tangent_frame(mesh: Mesh):
    """(mesh, object_from_world, bbox low, bbox size, normal matrix) of a mesh, cached: the
    path backend asks for tangents at every bounce."""
    cached = _TANGENT_FRAMES.get(id(mesh))
    if cached is not None and cached[0] is mesh:
        return cached
    if mesh.world_from_object is not None:
        m = np.asarray(mesh.world_from_object, dtype=np.float64)
        inv = np.linalg.inv(m)
        lin = m[:3, :3]
    else:
        inv, lin = np.eye(4), np.eye(3)
    obj_pts = mesh.positions @ inv[:3, :3].T + inv[:3, 3]
    lo, hi = obj_pts.min(0), obj_pts.max(0)
    size = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    normal_matrix = np.linalg.inv(lin).T  # Cycles transforms this tangent like a normal
    if len(_TANGENT_FRAMES) > 64:
        _TANGENT_FRAMES.clear()
    _TANGENT_FRAMES[id(mesh)] = cached = (mesh, inv, lo, size, normal_matrix)
    return cached


def _default_tangents(mesh: Mesh, position: np.ndarray) -> np.ndarray:
    """Blender's default tangent (radial about object Z over the bounding box), world space."""
    _, inv, lo, size, normal_matrix = _tangent_frame(mesh)
    p_obj = position @ inv[:3, :3].T + inv[:3, 3]
    g = (p_obj - lo) / size  # Blender's "generated" coordinates
    t_obj = np.stack([-(g[:, 1] - 0.5), g[:, 0] - 0.5, np.zeros(len(g))], -1)
    return t_obj @ normal_matrix.T


_UV_TANGENTS: dict[int, tuple] = {}


def uv_tangents(mesh: Mesh) -> np.ndarray | None:
    """(F, 3, 4) per-corner tangents of the mesh's UV layout, world space, and the bitangent
    sign (w), as tangent-space normal maps need them; None without UVs.

    MikkTSpace's construction (what Blender bakes and renders normal maps with), without its
    special cases: each triangle's tangent is the direction of increasing u (from positions
    and UVs), projected into each corner's normal plane; corners that share a vertex, normal,
    UV and orientation (the sign of the triangle's UV area) average their triangles'
    tangents weighted by the corner angle. Degenerate UV triangles take any tangent
    orthogonal to the normal. The sign is +1 where v grows along normal x tangent."""
    if mesh.uvs is None:
        return None
    cached = _UV_TANGENTS.get(id(mesh))
    if cached is not None and cached[0] is mesh:
        return cached[1]
    tri = mesh.triangles
    p = mesh.positions[tri]                     # (F, 3, 3)
    uv = mesh.uvs                                # (F, 3, 2)
    if mesh.normals is not None:
        n = mesh.normals
    else:
        face_n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        face_n /= np.maximum(np.linalg.norm(face_n, axis=-1, keepdims=True), 1e-30)
        n = np.repeat(face_n[:, None], 3, axis=1)
    dp1, dp2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    du1, dv1 = uv[:, 1, 0] - uv[:, 0, 0], uv[:, 1, 1] - uv[:, 0, 1]
    du2, dv2 = uv[:, 2, 0] - uv[:, 0, 0], uv[:, 2, 1] - uv[:, 0, 1]
    area = du1 * dv2 - du2 * dv1
    sign = np.where(area >= 0, 1.0, -1.0)
    safe = np.where(np.abs(area) > 1e-20, area, 1.0)
    t_face = (dp1 * dv2[:, None] - dp2 * dv1[:, None]) / safe[:, None]
    t_face[np.abs(area) <= 1e-20] = 0.0
    # corner angles
    angles = np.empty(tri.shape)
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
        angles[:, k] = np.arccos(np.clip(cos, -1, 1))
    t_corner = t_face[:, None, :] - n * (n * t_face[:, None, :]).sum(-1, keepdims=True)
    t_corner /= np.maximum(np.linalg.norm(t_corner, axis=-1, keepdims=True), 1e-30)
    t_corner *= angles[..., None]
    # weld corners sharing vertex, normal, uv and orientation
    key = np.concatenate([tri[..., None].astype(np.float64), np.round(n, 5), np.round(uv, 6),
                          np.repeat(sign[:, None, None], 3, axis=1)], -1).reshape(-1, 7)
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.reshape(-1)
    summed = np.zeros((group.max() + 1, 3))
    np.add.at(summed, group, t_corner.reshape(-1, 3))
    t = summed[group].reshape(tri.shape + (3,))
    t = t - n * (n * t).sum(-1, keepdims=True)
    length = np.linalg.norm(t, axis=-1, keepdims=True)
    fallback = np.cross(n, np.where(np.abs(n[..., :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    fallback /= np.maximum(np.linalg.norm(fallback, axis=-1, keepdims=True), 1e-30)
    t = np.where(length > 1e-12, t / np.maximum(length, 1e-30), fallback)
    out = np.concatenate([t, np.repeat(sign[:, None, None], 3, axis=1)], -1)
    if len(_UV_TANGENTS) > 64:
        _UV_TANGENTS.clear()
    _UV_TANGENTS[id(mesh)] = (mesh, out)
    return out


def tangent_basis(mesh: Mesh, triangle: np.ndarray, barycentric: np.ndarray, frame: np.ndarray) -> np.ndarray | None:
    """(N, 2, 3) the UV tangent and bitangent at hits, in each hit's local shading frame
    (rows of ``frame``: tangent, bitangent, shading normal), as Cycles' Normal Map node forms
    them: T = normalize(interpolated corner tangents), B = sign * N x T. None without UVs."""
    tangents = uv_tangents(mesh)
    if tangents is None:
        return None
    c = tangents[triangle]
    b1, b2 = barycentric[:, 0:1], barycentric[:, 1:2]
    t = (1 - b1 - b2) * c[:, 0, :3] + b1 * c[:, 1, :3] + b2 * c[:, 2, :3]
    sign = c[:, 0, 3:4]
    t_local = np.einsum("nij,nj->ni", frame, t)
    t_local[:, 2] = 0.0  # Cycles keeps the tangent in the shading normal's plane
    t_local /= np.maximum(np.linalg.norm(t_local, axis=-1, keepdims=True), 1e-30)
    b_local = sign * np.cross(np.array([0.0, 0.0, 1.0]), t_local)
    return np.stack([t_local, b_local], 1)


@dataclass
class ViewGeometry:
    """Per-view surface data, for the P pixels the part covers (pixel centres hit).

    Attributes:
        height, width: image size.
        pixels: (P,) flat indices into the H*W image.
        coverage: (H, W) bool, the part's silhouette through pixel centres.
        loss_pixels: (Q,) indices into the P covered pixels used by losses and metrics:
            covered by the part and by the reference mask, one pixel away from either edge.
        position, normal_geo: (P, 3) float64 world space; normal_geo faces the camera.
        frame: (P, 3, 3) float32 rows = tangent, bitangent, shading normal (world).
        wo: (P, 3) float32 direction toward the camera in the local frame.
        mask_iou: intersection over union of the silhouette and the reference mask (1 if none).
        uv: (P, 2) float32 texture coordinates (:mod:`pbrfit.textures`), or None when the mesh
            has none.
        tbn: (P, 2, 3) float32 the UV tangent and bitangent in the local shading frame
            (:func:`tangent_basis`, for normal maps), or None without UVs.
        footprint: (P, 3) float32, what the pixel filter adds to a GGX lobe's alpha^2 matrix at
            each pixel, in the frame's tangent axes (:func:`pbrfit.pixel_filter.footprint`);
            None: nothing.
        clear: (P,) bool, True where the part itself cannot block a ray that leaves the pixel's
            point on the side ``normal_geo`` points to (the point's triangle plane has the whole
            part behind it: :meth:`pbrfit.raycast.RayCaster.supporting_sides`), so such shadow
            rays need no query of the part; the other objects in view still block them. None:
            not known (every such ray is traced).
    """

    height: int
    width: int
    pixels: np.ndarray
    coverage: np.ndarray
    loss_pixels: np.ndarray
    position: np.ndarray
    normal_geo: np.ndarray
    frame: torch.Tensor
    wo: torch.Tensor
    mask_iou: float
    uv: torch.Tensor | None = None
    tbn: torch.Tensor | None = None
    footprint: torch.Tensor | None = None
    clear: np.ndarray | None = None


@dataclass
class SurfacePoints:
    """Shading data of surface points hit by rays (world space).

    Attributes:
        position: (N, 3) float64.
        normal_geo: (N, 3) float64 geometric normal, turned toward the ray's origin (the
            part is two-sided, as Cycles shades back faces with the flipped normal).
        frame: (N, 3, 3) float64 rows = tangent, bitangent, shading normal.
        wo: (N, 3) float64 direction back along the ray, in the local frame.
        uv: (N, 2) float64 texture coordinates, or None when the mesh has none.
        tbn: (N, 2, 3) float64 UV tangent and bitangent in the local frame, or None.
    """

    position: np.ndarray
    normal_geo: np.ndarray
    frame: np.ndarray
    wo: np.ndarray
    uv: np.ndarray | None = None
    tbn: np.ndarray | None = None


def surface_points(mesh: Mesh, triangle: np.ndarray, barycentric: np.ndarray, towards: np.ndarray) -> SurfacePoints:
    """Interpolate position, normals and Blender's default tangent frame at ray hits.

    Args:
        triangle: (N,) hit triangle indices; barycentric: (N, 2) (b1, b2) (see
            :mod:`pbrfit.raycast`); towards: (N, 3) unit directions from the hit back to
            the ray's origin.
    """
    tri = mesh.triangles[triangle]
    b1, b2 = barycentric[:, 0:1], barycentric[:, 1:2]
    b0 = 1 - b1 - b2
    p0, p1, p2 = (mesh.positions[tri[:, k]] for k in range(3))
    position = b0 * p0 + b1 * p1 + b2 * p2
    ng = np.cross(p1 - p0, p2 - p0)
    ng /= np.maximum(np.linalg.norm(ng, axis=-1, keepdims=True), 1e-30)
    flip = np.sign(np.sum(ng * towards, -1, keepdims=True))
    flip[flip == 0] = 1
    ng = ng * flip
    if mesh.normals is not None:
        nc = mesh.normals[triangle]
        ns = b0 * nc[:, 0] + b1 * nc[:, 1] + b2 * nc[:, 2]
        # keep the shading normal on the viewer's side of the surface, whatever the winding
        ns = ns * np.where(np.sum(ns * ng, -1, keepdims=True) < 0, -1.0, 1.0)
        ns /= np.maximum(np.linalg.norm(ns, axis=-1, keepdims=True), 1e-30)
        bad = ~np.isfinite(ns).all(-1) | (np.linalg.norm(ns, axis=-1) < 0.5)
        ns[bad] = ng[bad]
    else:
        ns = ng
    t = _default_tangents(mesh, position)
    t = np.cross(ns, np.cross(t, ns))  # Cycles: T = cross(N, normalize(cross(T, N)))
    tn = np.linalg.norm(t, axis=-1, keepdims=True)
    # on the Z axis itself the radial tangent vanishes: fall back to any tangent
    fallback = np.cross(ns, np.where(np.abs(ns[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    t = np.where(tn > 1e-9, t / np.maximum(tn, 1e-30), fallback / np.linalg.norm(fallback, axis=-1, keepdims=True))
    b = np.cross(ns, t)
    frame = np.stack([t, b, ns], axis=1)
    wo = np.einsum("pij,pj->pi", frame, towards)
    uv = tbn = None
    if mesh.uvs is not None:
        t = mesh.uvs[triangle]
        uv = b0 * t[:, 0] + b1 * t[:, 1] + b2 * t[:, 2]
        tbn = tangent_basis(mesh, triangle, barycentric, frame)
    return SurfacePoints(position, ng, frame, wo, uv, tbn)


def _erode(mask: np.ndarray, pixels: int = 1) -> np.ndarray:
    """``mask`` shrunk by ``pixels``: a pixel stays set when its whole 3x3 neighbourhood is."""
    m = torch.as_tensor(mask.astype(np.float32), device="cpu")[None, None]
    for _ in range(pixels):
        m = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return m[0, 0].numpy() > 0.5


def view_geometry(mesh: Mesh, caster: RayCaster, view: View, occluder: RayCaster | None = None) -> ViewGeometry:
    """The G-buffer of one view: one ray through each pixel centre.

    Args:
        occluder: other objects in view (:attr:`pbrfit.scene.FitScene.known`): pixels where
            they are in front of ``mesh`` are not covered.

    Raises:
        InputError: the part is not visible from the camera, or no pixel is covered by both
            the part and the view's mask.
    """
    h, w = view.resolution
    o, d = camera_rays(view.camera, h, w)
    hits = caster.intersect(o, d)
    covered = hits.hit
    if occluder is not None:
        front = occluder.intersect(o, d)
        covered = covered & ~(front.hit & (front.t < hits.t))
    pix = np.nonzero(covered)[0]
    if len(pix) == 0:
        raise InputError(
            f"view '{view.name}': the part {mesh.prim_path or ''} is not visible from camera "
            f"{view.camera.prim_path}; check the camera's transform and the target prim")
    surf = surface_points(mesh, hits.triangle[pix], hits.barycentric[pix], -d[pix])
    position, ng, frame, wo = surf.position, surf.normal_geo, surf.frame, surf.wo

    coverage = np.zeros(h * w, bool)
    coverage[pix] = True
    coverage = coverage.reshape(h, w)
    usable = _erode(coverage)
    iou = 1.0
    if view.mask is not None:
        ref = view.mask > 0.5
        union = np.logical_or(ref, coverage).sum()
        iou = float(np.logical_and(ref, coverage).sum() / max(union, 1))
        usable &= _erode(view.mask >= 0.99)
    if view.clipped is not None:  # a clipped highlight's value is only a lower bound
        usable &= _erode(~view.clipped)
    loss_pixels = np.nonzero(usable.reshape(-1)[pix])[0]
    if len(loss_pixels) == 0:
        clipped = " (the photo's unclipped pixels)" if view.clipped is not None else ""
        raise InputError(
            f"view '{view.name}': no pixel is covered by both the part and the mask{clipped} of "
            f"{view.image_path}; check the camera calibration, the mask and the photo's exposure")
    return ViewGeometry(h, w, pix, coverage, loss_pixels, position, ng,
                        torch.as_tensor(frame, dtype=torch.float32, device="cpu"),
                        torch.as_tensor(wo, dtype=torch.float32, device="cpu"), iou,
                        None if surf.uv is None else torch.as_tensor(surf.uv, dtype=torch.float32, device="cpu"),
                        None if surf.tbn is None else torch.as_tensor(surf.tbn, dtype=torch.float32, device="cpu"),
                        torch.as_tensor(pixel_filter.footprint(coverage, pix, frame, position=position,
                                                               spacing=_hit_spacing(o, d, h, w, pix, position, ng)),
                                        device="cpu"),
                        _clear(mesh, caster, hits.triangle[pix], ng))


#: views more grazing than this cosine stretch the expected spacing of hits no further
_GRAZING_COS = 0.2


def _hit_spacing(o: np.ndarray, d: np.ndarray, h: int, w: int, pix: np.ndarray, position: np.ndarray,
                 normal_geo: np.ndarray) -> np.ndarray:
    """(P,) the distance between neighbouring pixels' hits on a continuous surface at each
    covered pixel: the angle between neighbouring rays times the hit's distance, over the
    cosine of the view to the surface (at most 1 / ``_GRAZING_COS``)."""
    rays = d.reshape(h, w, 3)
    step = np.linalg.norm(np.diff(rays, axis=1), axis=-1)
    angle = np.concatenate([step, step[:, -1:]], 1).reshape(-1)[pix]
    towards = -d[pix]
    distance = np.linalg.norm(position - o[pix], axis=-1)
    cos = np.abs(np.sum(towards * normal_geo, -1))
    return angle * distance / np.maximum(cos, _GRAZING_COS)


def _clear(mesh: Mesh, caster: RayCaster, triangle: np.ndarray, normal_geo: np.ndarray) -> np.ndarray:
    """:attr:`ViewGeometry.clear` of points on triangles ``triangle`` whose geometric normals,
    turned to the camera, are ``normal_geo`` (P, 3): the supporting side the normal is on."""
    tri = mesh.triangles[triangle]
    p0, p1, p2 = (mesh.positions[tri[:, k]] for k in range(3))
    back = (np.cross(p1 - p0, p2 - p0) * normal_geo).sum(-1) < 0  # turned against the winding
    return caster.supporting_sides()[triangle, back.astype(np.int64)]
