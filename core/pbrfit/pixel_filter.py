"""The camera's pixel filter at the first surface hit: lobes widened by the normal's spread.

A pixel of a render or a photograph is not the radiance along the ray through its centre but
a weighted mean over its neighbourhood: Cycles importance-samples its pixel filter
(Blackman-Harris, Blender's default width 1.5 px, which Cycles spreads over a 3 px support),
and a camera's lens and demosaicing blur much alike. Where the part's shading normal turns
quickly across the image (a curved part seen whole, small features), one pixel averages
mirror directions over an angle as wide as a sharp lobe, and a renderer that shades the
pixel centre only makes the fit read that blur as roughness. Measured before this model: a
clear coat of roughness 0.05 fitted 0.09 on a sphere and 0.15 on Suzanne, a glossy plastic's
0.15 fitted 0.21 on Suzanne.

Both renderers shade pixel centres, so they model the filter as real-time renderers
antialias highlights (Kaplanyan, Hill, Patney & Lefohn 2016; Tokuyoshi & Kaplanyan 2019):
over the filter, the shading normal's slope moves with covariance ``v J J^T`` (J its change
per pixel projected on the tangent plane, 2x2; v the filter's variance per axis); a GGX lobe's
core is close to a Beckmann lobe, whose slopes have covariance ``A / 2`` (A the alpha^2 matrix,
``diag(alpha_x^2, alpha_y^2)`` in the lobe's axes), so convolving adds ``2 v J J^T`` to A::

    A -> A + K,   K = 2 v J J^T  (each eigenvalue capped at KERNEL_MAX)

whose principal axes and eigenvalues are the widened lobe's axes and alphas^2
(:func:`pbrfit.microfacet.filtered_lobe`; the base lobes and the coat in :mod:`pbrfit.bsdf`),
at the first hit only: the G-buffer's pixels. The lobe keeps its own far tails, which the
average over normals leaves as they were (:func:`pbrfit.microfacet.filtered_ggx_D`). Where the
normal turns along one image direction only (a fold, a cylinder seen side on) K has one axis and
the lobe widens across the fold alone: an isotropic widening by K's trace, used before session
15, blurred along the fold as much and read a 0.05 coat on Suzanne as rough. On a sphere
filling 140 px K is 7e-5 on both axes, which turns a coat roughness of 0.05 into 0.093, where
the fit without the model landed (0.09-0.094).
Derivatives are finite differences of the G-buffer's shading normals between neighbouring
pixels, central where both neighbours lie on the same smooth surface, one-sided where one
does, zero where neither does (a crease or an occlusion edge is not curvature). A neighbour
lies on the same surface when its hit point is within :data:`MAX_JUMP` of the distance
between neighbouring pixels' hits on a continuous surface (an occlusion edge jumps further: on
Suzanne's views the pairs of neighbours split into ~1 and 2-25 such distances) and its normal
within :data:`MAX_NORMAL_STEP` (a crease). Before session 50 any step over 20 degrees was taken
for an edge, which left the strongly curved rims (an ear's, a brow's: 20-40 degrees a pixel)
unwidened: their highlights read up to twice Cycles' there, where a supersampled render of the
same lobes matched Cycles, and a fit made a 0.05 coat 0.10 to blur them.

Where the image changes from one pixel to the next for reasons the mesh's normals do not
show (a normal map's bumps as fine as the pixels), the widening sees nothing; there a renderer
can instead average the pixel centres around each pixel with the filter's taps
(:func:`image_taps`, :func:`neighbourhood`; ``RasterRenderer(filter_pixels=True)``, which
the fit of a normal map uses). It is one model or the other: both at once count the filter
twice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FILTER_VARIANCE", "KERNEL_MAX", "MAX_NORMAL_STEP", "MAX_JUMP", "footprint", "image_taps",
           "neighbourhood"]

#: variance per image axis, in pixels^2, of Cycles' default pixel filter: Blackman-Harris of
#: width 1.5 px, evaluated over a support twice that (3 px); its standard deviation is 0.42 px
FILTER_VARIANCE = 0.1727
#: the most added to alpha^2 (Tokuyoshi & Kaplanyan's kappa): a pixel spanning a crease is not
#: one rough lobe
KERNEL_MAX = 0.18
#: a neighbour whose shading normal differs by more than this (unit vectors' distance, about
#: 41 degrees) lies across a crease: not used for the derivative
MAX_NORMAL_STEP = 0.7
#: a neighbour whose hit point lies further than this many times the distance between
#: neighbouring hits on a continuous surface lies across an occlusion edge: not used
MAX_JUMP = 2.5


def _derivative(normals: np.ndarray, valid: np.ndarray, axis: int, positions: np.ndarray | None = None,
                spacing: np.ndarray | None = None) -> np.ndarray:
    """Change of the normal per pixel along ``axis`` (0: rows, 1: columns), (H, W, 3); with
    ``positions`` (H, W, 3) and ``spacing`` (H, W), neighbours across an occlusion edge left out."""
    def shifted(a, step):
        out = np.zeros_like(a)
        src = [slice(None)] * 2
        dst = [slice(None)] * 2
        if step > 0:
            src[axis], dst[axis] = slice(step, None), slice(None, -step)
        else:
            src[axis], dst[axis] = slice(None, step), slice(-step, None)
        out[tuple(dst)] = a[tuple(src)]
        return out

    nxt, prv = shifted(normals, 1), shifted(normals, -1)
    forward, backward = nxt - normals, normals - prv
    ok_f = valid & shifted(valid, 1) & (np.linalg.norm(forward, axis=-1) < MAX_NORMAL_STEP)
    ok_b = valid & shifted(valid, -1) & (np.linalg.norm(backward, axis=-1) < MAX_NORMAL_STEP)
    if positions is not None:
        reach = MAX_JUMP * spacing
        ok_f &= np.linalg.norm(shifted(positions, 1) - positions, axis=-1) < reach
        ok_b &= np.linalg.norm(positions - shifted(positions, -1), axis=-1) < reach
    both = (ok_f & ok_b)[..., None]
    return np.where(both, 0.5 * (forward + backward),
                    np.where(ok_f[..., None], forward, np.where(ok_b[..., None], backward, 0.0)))


def footprint(coverage: np.ndarray, pixels: np.ndarray, frame: np.ndarray,
              filter_variance: float = FILTER_VARIANCE, position: np.ndarray | None = None,
              spacing: np.ndarray | None = None) -> np.ndarray:
    """What the pixel filter adds to a GGX lobe's alpha^2 matrix at each covered pixel.

    Args:
        coverage: (H, W) bool, pixels whose centre ray hits the part.
        pixels: (P,) flat indices of those pixels into the H*W image.
        frame: (P, 3, 3) each pixel's shading frame at its centre, rows tangent, bitangent and
            unit shading normal (world).
        filter_variance: the pixel filter's variance per axis, pixels^2.
        position: (P, 3) each pixel's hit point (world), and ``spacing`` (P,) the distance
            between neighbouring pixels' hits on a continuous surface there (scene units): a
            neighbour further than :data:`MAX_JUMP` spacings lies across an occlusion edge.
            None: every covered neighbour within :data:`MAX_NORMAL_STEP` counts.

    Returns:
        (P, 3) float32 ``(kxx, kxy, kyy)``: ``K = 2 v J J^T`` in the frame's tangent and
        bitangent axes, J the normal's change per image pixel (2x2), each eigenvalue capped at
        :data:`KERNEL_MAX`. Its trace is ``2 v (|dn/dx|^2 + |dn/dy|^2)``.
    """
    h, w = coverage.shape
    normals = np.zeros((h * w, 3), np.float64)
    normals[pixels] = frame[:, 2]
    normals = normals.reshape(h, w, 3)
    positions = gaps = None
    if position is not None:
        positions = np.zeros((h * w, 3), np.float64)
        positions[pixels] = position
        positions = positions.reshape(h, w, 3)
        gaps = np.zeros(h * w, np.float64)
        gaps[pixels] = spacing
        gaps = gaps.reshape(h, w)
    dx = _derivative(normals, coverage, 1, positions, gaps).reshape(-1, 3)[pixels]
    dy = _derivative(normals, coverage, 0, positions, gaps).reshape(-1, 3)[pixels]
    tangents = np.asarray(frame[:, :2], np.float64)  # (P, 2, 3)
    jac = np.stack([np.einsum("pij,pj->pi", tangents, dx), np.einsum("pij,pj->pi", tangents, dy)], -1)  # (P, 2, 2)
    k = 2.0 * filter_variance * np.einsum("pik,pjk->pij", jac, jac)
    eigenvalues, eigenvectors = np.linalg.eigh(k)
    capped = np.minimum(eigenvalues, KERNEL_MAX)
    k = np.einsum("pik,pk,pjk->pij", eigenvectors, capped, eigenvectors)
    return np.stack([k[:, 0, 0], k[:, 0, 1], k[:, 1, 1]], -1).astype(np.float32)


def image_taps(filter_variance: float = FILTER_VARIANCE) -> np.ndarray:
    """(3, 3) the filter as weights of a pixel and its 8 neighbours' centres (rows: -1, 0, +1
    image rows; columns likewise): separable taps ``(v/2, 1 - v, v/2)`` per axis, the three-tap
    kernel with the filter's variance ``v`` per axis, summing to 1.

    What :func:`footprint` leaves out: an image whose radiance changes sharply from one pixel
    to the next (a normal map's ramps, a label's edge) is, in Cycles, each pixel's filtered
    mean, softer than its pixel centres. Measured on the embossed panel's truth (its normal
    map, 6 views under forest, our renderer at 4x the texture fit's samples against Cycles):
    mean ΔE2000 1.88 for the pixel centres, 1.46 through these taps."""
    taps = np.array([0.5 * filter_variance, 1.0 - filter_variance, 0.5 * filter_variance])
    return np.outer(taps, taps)


def neighbourhood(coverage: np.ndarray, pixels: np.ndarray, sel: np.ndarray,
                  filter_variance: float = FILTER_VARIANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a filtered render of the covered pixels ``sel`` needs (:func:`image_taps`).

    Args:
        coverage: (H, W) bool, pixels whose centre ray hits the part.
        pixels: (P,) flat indices of those pixels into the H*W image.
        sel: (S,) indices into the P covered pixels.

    Returns:
        ``(need, index, weights)``: ``need`` (M,) the covered pixels to shade (indices into
        the P, sorted), ``index`` (S, 9) int64 rows into ``need`` of each pixel's neighbours,
        ``weights`` (S, 9) float32 their taps, renormalized over the covered ones (a pixel on
        the silhouette averages only the part; a neighbour off the part gets weight 0 and
        row 0).
    """
    h, w = coverage.shape
    if len(sel) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 9), np.int64), np.zeros((0, 9), np.float32)
    covered_index = np.full(h * w, -1, np.int64)
    covered_index[pixels] = np.arange(len(pixels))
    rows, cols = np.divmod(pixels[sel], w)
    dy, dx = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
    r = rows[:, None] + dy.reshape(1, -1)
    c = cols[:, None] + dx.reshape(1, -1)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    neighbour = np.where(inside, covered_index[np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)], -1)
    weights = np.where(neighbour >= 0, image_taps(filter_variance).reshape(1, -1), 0.0)
    weights /= weights.sum(1, keepdims=True)  # the centre is always covered
    need, index = np.unique(np.where(neighbour >= 0, neighbour, pixels.size), return_inverse=True)
    index = index.reshape(neighbour.shape)
    if need[-1] == pixels.size:  # the stand-in for "not covered": weight 0, any row
        need = need[:-1]
        index = np.minimum(index, len(need) - 1)
    return need, index.astype(np.int64), weights.astype(np.float32)
