"""Ray casting against the fixed part geometry (primary hits and shadow rays).

Geometry and cameras do not change during a material fit, so every ray query here is
non-differentiable. The queries run on Mitsuba 3's ray tracer through Dr.Jit: the
``llvm_ad_rgb`` variant on CPU (Dr.Jit needs libLLVM >= 16; see README), ``cuda_ad_rgb``
when a CUDA device is present and asked for. Results come back as numpy arrays.

Barycentric convention: a hit at ``(b1, b2)`` on triangle ``(v0, v1, v2)`` is
``(1 - b1 - b2) * v0 + b1 * v1 + b2 * v2``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from .errors import PbrfitError
from .scene import Mesh

__all__ = ["RayHits", "RayCaster", "configure_drjit_llvm", "mitsuba_variant"]

_VARIANT: str | None = None


def configure_drjit_llvm() -> str | None:
    """Point Dr.Jit at a libLLVM it can use (>= 16) unless the user already did.

    Returns the library path chosen, or None if none was found (Dr.Jit then uses its own
    search, which on Debian 12 finds LLVM 15 and aborts while compiling some kernels).
    """
    if os.environ.get("DRJIT_LIBLLVM_PATH"):
        return os.environ["DRJIT_LIBLLVM_PATH"]
    candidates = []
    for pattern in ("/usr/lib/x86_64-linux-gnu/libLLVM.so.*", "/usr/lib/x86_64-linux-gnu/libLLVM-*.so",
                    "/usr/lib/aarch64-linux-gnu/libLLVM.so.*", "/usr/lib/llvm-*/lib/libLLVM*.so*",
                    "/opt/homebrew/opt/llvm/lib/libLLVM.dylib", "/usr/local/opt/llvm/lib/libLLVM.dylib"):
        candidates += glob.glob(pattern)

    def major(path: str) -> int:
        digits = "".join(c if c.isdigit() else " " for c in os.path.basename(path) + " " + path).split()
        return max((int(d) for d in digits if 10 <= int(d) < 100), default=0)

    usable = sorted((p for p in candidates if major(p) >= 16), key=major, reverse=True)
    if usable:
        os.environ["DRJIT_LIBLLVM_PATH"] = usable[0]
        return usable[0]
    return None


def mitsuba_variant(device: str = "cpu") -> str:
    """Select (once per process) and return the Mitsuba variant for ``device``.

    Args:
        device: "cpu" (``llvm_ad_rgb``) or "cuda" (``cuda_ad_rgb``).
    """
    global _VARIANT
    configure_drjit_llvm()
    import mitsuba as mi

    wanted = "cuda_ad_rgb" if device == "cuda" else "llvm_ad_rgb"
    if _VARIANT is None:
        try:
            mi.set_variant(wanted)
        except Exception as e:  # the JIT backend could not start
            raise PbrfitError(
                f"Mitsuba variant {wanted} is unavailable ({e}); on CPU install libLLVM >= 16 "
                "(make setup does) or set DRJIT_LIBLLVM_PATH") from None
        _VARIANT = wanted
    elif _VARIANT != wanted:
        mi.set_variant(wanted)
        _VARIANT = wanted
    return _VARIANT


@dataclass
class RayHits:
    """Closest hits. Arrays have one entry per ray.

    Attributes:
        hit: bool mask.
        t: distance along the (unit) direction; inf where no hit.
        triangle: triangle index; -1 where no hit.
        barycentric: (N, 2) float64 (b1, b2).
    """

    hit: np.ndarray
    t: np.ndarray
    triangle: np.ndarray
    barycentric: np.ndarray


class RayCaster:
    """Closest-hit and occlusion queries against one triangle mesh.

    Args:
        mesh: the part, world space.
        device: "cpu" or "cuda".
    """

    def __init__(self, mesh: Mesh, device: str = "cpu"):
        mitsuba_variant(device)
        import drjit as dr
        import mitsuba as mi

        self._mi, self._dr = mi, dr
        pos = np.ascontiguousarray(mesh.positions, dtype=np.float32)
        tri = np.ascontiguousarray(mesh.triangles, dtype=np.uint32)
        m = mi.Mesh("part", vertex_count=len(pos), face_count=len(tri),
                    has_vertex_normals=False, has_vertex_texcoords=False)
        params = mi.traverse(m)
        params["vertex_positions"] = mi.Float(pos.ravel())
        params["faces"] = mi.UInt32(tri.ravel())
        params.update()
        self._scene = mi.load_dict({"type": "scene", "part": m})
        extent = np.ptp(mesh.positions, axis=0)
        #: offset of secondary-ray origins from the surface, in scene units
        self.epsilon = float(1e-4 * max(np.linalg.norm(extent), 1e-9))

    def _rays(self, origins: np.ndarray, directions: np.ndarray, tmax: np.ndarray | float | None = None):
        mi = self._mi
        o = np.ascontiguousarray(origins, dtype=np.float32)
        d = np.ascontiguousarray(directions, dtype=np.float32)
        ray = mi.Ray3f(mi.Point3f(mi.Float(o[:, 0]), mi.Float(o[:, 1]), mi.Float(o[:, 2])),
                       mi.Vector3f(mi.Float(d[:, 0]), mi.Float(d[:, 1]), mi.Float(d[:, 2])))
        if tmax is not None:
            ray.maxt = mi.Float(np.broadcast_to(np.asarray(tmax, np.float32), (len(o),)).copy())
        return ray

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """Closest hits of rays ``origins + t * directions`` (directions unit length)."""
        if len(origins) == 0:
            return RayHits(np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 2)))
        pi = self._scene.ray_intersect_preliminary(self._rays(origins, directions))
        hit = pi.is_valid().numpy().astype(bool)
        t = np.where(hit, pi.t.numpy().astype(np.float64), np.inf)
        tri = np.where(hit, pi.prim_index.numpy().astype(np.int64), -1)
        with np.errstate(invalid="ignore"):  # misses carry undefined barycentrics; zeroed below
            uv = np.stack([pi.prim_uv[0].numpy(), pi.prim_uv[1].numpy()], axis=-1).astype(np.float64)
        return RayHits(hit, t, tri, np.where(hit[:, None], uv, 0.0))

    def occluded(self, origins: np.ndarray, directions: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
        """True where the ray hits the mesh anywhere ahead (shadow rays to infinity)."""
        out = np.empty(len(origins), dtype=bool)
        for s in range(0, len(origins), chunk):
            ray = self._rays(origins[s:s + chunk], directions[s:s + chunk])
            out[s:s + chunk] = self._scene.ray_test(ray).numpy().astype(bool)
        return out
