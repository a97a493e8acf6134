"""Silhouettes: where the camera's pose and focal length show in a photo of a uniform part.

A camera a degree off moves the part's outline by a few pixels; its shading barely changes. So
the calibration (:mod:`pbrfit.calibration`) fits camera corrections to outlines: the mesh's
*contour* (its edges between a triangle facing the camera and one facing away, where no other
surface hides them), projected through the corrected pinhole camera, against the *boundary*
of the photo's mask (its 0.5 iso-line). The projection is differentiable in the corrections;
the loss is a symmetric chamfer distance in pixels between the two point sets.

Pixel coordinates ``(j, i)`` are those of :func:`pbrfit.gbuffer.camera_rays`: pixel ``(j, i)``'s
centre is at ``(j, i)``, ``j`` to the right and ``i`` down from the top-left pixel.

Camera corrections (``delta``): a rotation vector ``w`` (radians, in the camera's own frame:
the new ``world_from_camera`` rotation is ``R @ exp([w]x)``), a translation ``t`` (world units,
added to the camera's position) and ``log`` of the focal length's scale.
"""

from __future__ import annotations

import numpy as np
import torch

from .raycast import RayCaster
from .rotation import exp_so3
from .scene import Camera, Mesh

__all__ = ["boundary_points", "contour_points", "project", "chamfer", "corrected_camera", "HUBER_PX"]

#: the chamfer's Huber threshold in pixels: a segmentation's stray blob costs linearly beyond it
HUBER_PX = 2.0


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """Sub-pixel points (K, 2) ``(j, i)`` of the 0.5 iso-line of ``mask`` (H, W) in [0, 1]:
    one per pair of 4-neighbouring pixels on either side of 0.5, linearly interpolated."""
    m = np.asarray(mask, np.float64)
    out = []
    a, b = m[:, :-1], m[:, 1:]  # horizontal neighbours
    r, c = np.nonzero((a - 0.5) * (b - 0.5) < 0)
    t = (0.5 - a[r, c]) / (b[r, c] - a[r, c])
    out.append(np.stack([c + t, r.astype(np.float64)], -1))
    a, b = m[:-1, :], m[1:, :]  # vertical neighbours
    r, c = np.nonzero((a - 0.5) * (b - 0.5) < 0)
    t = (0.5 - a[r, c]) / (b[r, c] - a[r, c])
    out.append(np.stack([c.astype(np.float64), r + t], -1))
    return np.concatenate(out)


def contour_points(mesh: Mesh, caster: RayCaster, camera: Camera, per_edge: int = 3) -> np.ndarray:
    """World points (N, 3) on the mesh's contour seen from ``camera``'s centre: ``per_edge``
    points along each edge shared by a front- and a back-facing triangle, kept where a ray
    from the camera reaches them unhidden."""
    eye = np.asarray(camera.world_from_camera, np.float64)[:3, 3]
    p = np.asarray(mesh.positions, np.float64)
    tri = np.asarray(mesh.triangles)
    n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    front = ((eye - p[tri[:, 0]]) * n).sum(-1) > 0
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    faces = np.tile(np.arange(len(tri)), 3)
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, faces = key[order], faces[order]
    same = (key[1:] == key[:-1]).all(1)
    first = np.nonzero(same)[0]  # pairs (first, first + 1) of faces sharing an edge
    contour = key[first][front[faces[first]] != front[faces[first + 1]]]
    if len(contour) == 0:
        return np.zeros((0, 3))
    t = (np.arange(per_edge) + 0.5) / per_edge
    pts = (p[contour[:, 0]][:, None] * (1 - t)[None, :, None] + p[contour[:, 1]][:, None] * t[None, :, None])
    pts = pts.reshape(-1, 3)
    d = pts - eye
    dist = np.linalg.norm(d, axis=-1)
    hits = caster.intersect(np.broadcast_to(eye, pts.shape).copy(), d / dist[:, None])
    visible = ~hits.hit | (hits.t > dist - 1e-3 * dist.max())
    return pts[visible]


def project(points: np.ndarray, camera: Camera, size: tuple[int, int], rotation: torch.Tensor,
            translation: torch.Tensor, log_focal: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (N, 2) ``(j, i)`` of world ``points`` through ``camera`` corrected by
    the deltas (module docstring), for an image of ``size`` (height, width); differentiable in
    the deltas."""
    h, w = size
    m = torch.as_tensor(np.asarray(camera.world_from_camera, np.float64), dtype=rotation.dtype)
    r = m[:3, :3] @ exp_so3(rotation)
    pc = (torch.as_tensor(points, dtype=rotation.dtype) - (m[:3, 3] + translation)) @ r  # R^T (p - c), rows
    f = camera.focal_length * torch.exp(log_focal)
    x, y = -f * pc[:, 0] / pc[:, 2], -f * pc[:, 1] / pc[:, 2]
    j = ((x - camera.horizontal_aperture_offset) / (camera.horizontal_aperture / 2) + 1) / 2 * w - 0.5
    i = (1 - (y - camera.vertical_aperture_offset) / (camera.vertical_aperture / 2)) / 2 * h - 0.5
    return torch.stack([j, i], -1)


def chamfer(a: torch.Tensor, b: torch.Tensor, huber: float = HUBER_PX) -> torch.Tensor:
    """Symmetric chamfer distance between point sets (N, 2) and (M, 2), pixels: the mean Huber
    distance of each point to the nearest of the other set, both ways, averaged."""
    d = torch.cdist(a, b)

    def h(x):
        return torch.where(x < huber, 0.5 * x * x / huber, x - 0.5 * huber)

    return 0.5 * (h(d.min(1).values).mean() + h(d.min(0).values).mean())


def corrected_camera(camera: Camera, rotation, translation, log_focal) -> Camera:
    """``camera`` with the deltas applied (floats or arrays), a new object."""
    from dataclasses import replace

    m = np.array(camera.world_from_camera, np.float64)
    w = torch.as_tensor(np.asarray(rotation, np.float64))
    m[:3, :3] = m[:3, :3] @ exp_so3(w).numpy()
    m[:3, 3] = m[:3, 3] + np.asarray(translation, np.float64)
    return replace(camera, world_from_camera=m, focal_length=float(camera.focal_length * np.exp(float(log_focal))))
