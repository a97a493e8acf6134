"""Ray casting against the fixed part geometry (primary hits, secondary and shadow rays).

Geometry and cameras do not change during a material fit, so every ray query here is
non-differentiable: rays go in as numpy arrays, hits come back as numpy arrays. Two ray
engines answer the same queries:

* ``embree`` (the CPU default): Intel Embree 4 through the ``embreex`` wheel, the ray
  engine Cycles itself uses on the CPU. The wheel carries the library, so the CPU path needs
  no system library on Windows, macOS or Linux. Watertight ("robust") intersection.
* ``mitsuba``: Mitsuba 3's ray tracer through Dr.Jit, the CUDA default (``cuda_ad_rgb``)
  when Mitsuba is installed (without it, a CUDA fit shades on the GPU and casts its rays
  with Embree on the CPU), and optional on the CPU (``llvm_ad_rgb``, which needs a system libLLVM >= 16; see
  :func:`configure_drjit_llvm`). Installed with the ``pbrfit[mitsuba]`` extra.

Both engines return the same hits to float32 precision (``tests/test_raycast.py`` compares
them ray by ray, and a render through each).

Barycentric convention: a hit at ``(b1, b2)`` on triangle ``(v0, v1, v2)`` is
``(1 - b1 - b2) * v0 + b1 * v1 + b2 * v2`` (Embree's and Mitsuba's ``(u, v)``).
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import InputError, PbrfitError
from .scene import Mesh

__all__ = ["RayHits", "RayCaster", "RAY_ENGINES", "ENGINE_ENV", "default_engine", "configure_drjit_llvm",
           "mitsuba_variant"]

#: the ray engines, by the name used in options, provenance and ``PBRFIT_RAY_ENGINE``
RAY_ENGINES = ("embree", "mitsuba")
#: environment variable choosing the ray engine when the caller does not ("auto" or a name)
ENGINE_ENV = "PBRFIT_RAY_ENGINE"

#: rays per engine call: bounds the temporary arrays of one query (~100 bytes per ray)
_CHUNK = 1 << 21
#: most triangle x vertex heights :meth:`RayCaster.supporting_sides` computes (about a second
#: of float64 work, once per mesh and process); a larger mesh is not tested and every shadow
#: ray of it is traced
SUPPORT_TEST_LIMIT = 300_000_000
#: :meth:`RayCaster.supporting_sides` of the meshes seen in this process, by content
_SIDES: dict[tuple, np.ndarray] = {}
_SIDES_KEPT = 8
_SIDES_LOCK = threading.Lock()  # views prepare on threads of their own

_VARIANT: str | None = None


def default_engine(device: str = "cpu") -> str:
    """The engine ``auto`` means on ``device``: Mitsuba on CUDA when it is installed,
    else Embree.

    ``PBRFIT_RAY_ENGINE`` (``embree`` or ``mitsuba``) overrides the choice.
    """
    chosen = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if chosen == "auto":
        if device == "cuda":
            import importlib.util

            return "mitsuba" if importlib.util.find_spec("mitsuba") is not None else "embree"
        return "embree"
    if chosen not in RAY_ENGINES:
        raise InputError(f"{ENGINE_ENV}={chosen!r} is not a ray engine; use auto, {' or '.join(RAY_ENGINES)}")
    return chosen


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

    Raises:
        PbrfitError: Mitsuba is not installed, or its JIT backend cannot start.
    """
    global _VARIANT
    wanted = "cuda_ad_rgb" if device == "cuda" else "llvm_ad_rgb"
    if device != "cuda" and configure_drjit_llvm() is None:
        raise PbrfitError("the mitsuba ray engine on the CPU needs a system libLLVM >= 16 (none found; set "
                          "DRJIT_LIBLLVM_PATH to one), or use the embree engine (the CPU default)")
    try:
        import mitsuba as mi
    except ImportError:
        raise PbrfitError(f"the mitsuba ray engine needs Mitsuba 3 ({wanted}): pip install 'pbrfit[mitsuba]', "
                          "or use the embree engine on the CPU") from None
    if _VARIANT != wanted:
        try:
            mi.set_variant(wanted)
        except Exception as e:  # the JIT backend could not start
            raise PbrfitError(f"Mitsuba variant {wanted} is unavailable ({e}); on the CPU use the embree engine, "
                              "or install libLLVM >= 16 and set DRJIT_LIBLLVM_PATH") from None
        _VARIANT = wanted
    return _VARIANT


@dataclass
class RayHits:
    """Closest hits. Arrays have one entry per ray.

    Attributes:
        hit: bool mask.
        t: distance along the (unit) direction; inf where no hit.
        triangle: triangle index; -1 where no hit.
        barycentric: (N, 2) float64 (b1, b2); zero where no hit.
    """

    hit: np.ndarray
    t: np.ndarray
    triangle: np.ndarray
    barycentric: np.ndarray

    @staticmethod
    def empty() -> RayHits:
        return RayHits(np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 2)))

    @staticmethod
    def concatenate(parts: list[RayHits]) -> RayHits:
        if len(parts) == 1:
            return parts[0]
        return RayHits(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("hit", "t", "triangle", "barycentric")))


class _EmbreeEngine:
    """Embree 4 (``embreex``): float32 rays, watertight intersection, CPU threads of its own."""

    name = "embree"

    def __init__(self, positions: np.ndarray, triangles: np.ndarray):
        try:
            from embreex.mesh_construction import TriangleMesh
            from embreex.rtcore_scene import EmbreeScene
        except ImportError as e:
            raise PbrfitError(f"the embree ray engine needs the embreex package ({e}): pip install embreex "
                              "(pbrfit depends on it; the install is incomplete)") from None
        self._scene = EmbreeScene(robust=True)
        self._mesh = TriangleMesh(self._scene, positions, triangles.astype(np.int32))  # keep alive with the scene

    def intersect(self, o: np.ndarray, d: np.ndarray, max_distance: np.ndarray | None = None) -> RayHits:
        r = self._scene.run(o, d, output=1) if max_distance is None else \
            self._scene.run(o, d, dists=max_distance, output=1)
        tri = r["primID"].astype(np.int64)
        hit = tri >= 0
        miss = ~hit
        t = r["tfar"].astype(np.float64)
        uv = np.empty((len(tri), 2))
        uv[:, 0], uv[:, 1] = r["u"], r["v"]
        # in place (a random walk's many short queries: new arrays per field cost as much as the query)
        t[miss], tri[miss], uv[miss] = np.inf, -1, 0.0
        return RayHits(hit, t, tri, uv)

    def occluded(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self._scene.run(o, d, query="OCCLUDED") >= 0


class _MitsubaEngine:
    """Mitsuba 3 / Dr.Jit: ``cuda_ad_rgb`` on CUDA, ``llvm_ad_rgb`` on the CPU."""

    name = "mitsuba"

    def __init__(self, positions: np.ndarray, triangles: np.ndarray, device: str):
        mitsuba_variant(device)
        import mitsuba as mi

        self._mi = mi
        m = mi.Mesh("part", vertex_count=len(positions), face_count=len(triangles),
                    has_vertex_normals=False, has_vertex_texcoords=False)
        params = mi.traverse(m)
        params["vertex_positions"] = mi.Float(positions.ravel())
        params["faces"] = mi.UInt32(triangles.astype(np.uint32).ravel())
        params.update()
        self._scene = mi.load_dict({"type": "scene", "part": m})

    def _rays(self, o: np.ndarray, d: np.ndarray, max_distance: np.ndarray | None = None):
        mi = self._mi
        ray = mi.Ray3f(mi.Point3f(mi.Float(o[:, 0]), mi.Float(o[:, 1]), mi.Float(o[:, 2])),
                       mi.Vector3f(mi.Float(d[:, 0]), mi.Float(d[:, 1]), mi.Float(d[:, 2])))
        return ray if max_distance is None else mi.Ray3f(ray, mi.Float(max_distance))

    def intersect(self, o: np.ndarray, d: np.ndarray, max_distance: np.ndarray | None = None) -> RayHits:
        pi = self._scene.ray_intersect_preliminary(self._rays(o, d, max_distance))
        hit = pi.is_valid().numpy().astype(bool)
        t = np.where(hit, pi.t.numpy().astype(np.float64), np.inf)
        tri = np.where(hit, pi.prim_index.numpy().astype(np.int64), -1)
        with np.errstate(invalid="ignore"):  # misses carry undefined barycentrics; zeroed below
            uv = np.stack([pi.prim_uv[0].numpy(), pi.prim_uv[1].numpy()], axis=-1).astype(np.float64)
        return RayHits(hit, t, tri, np.where(hit[:, None], uv, 0.0))

    def occluded(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self._scene.ray_test(self._rays(o, d)).numpy().astype(bool)


def _supporting_sides(pos: np.ndarray, tri: np.ndarray, tolerance: float) -> np.ndarray:
    """:meth:`RayCaster.supporting_sides` of vertices ``pos`` (V, 3) and ``tri`` (T, 3): the
    heights of every vertex over every triangle's plane, a block of triangles at a time."""
    sides = np.zeros((len(tri), 2), dtype=bool)
    if len(tri) == 0 or len(tri) * len(pos) > SUPPORT_TEST_LIMIT:
        return sides
    p0, p1, p2 = (pos[tri[:, k]] for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)
    length = np.linalg.norm(normal, axis=-1)
    normal = normal / np.where(length > 0, length, 1.0)[:, None]
    offset = (normal * p0).sum(-1)
    # a near-degenerate triangle's cross product is rounding noise, not its plane: its own
    # points (where rays start) must lie on the plane tested
    valid = (length > 0) & (np.abs((normal * p1).sum(-1) - offset) <= tolerance) & \
        (np.abs((normal * p2).sum(-1) - offset) <= tolerance)
    block = max(1, (1 << 24) // len(pos))
    for s in range(0, len(tri), block):
        heights = normal[s:s + block] @ pos.T - offset[s:s + block, None]
        sides[s:s + block, 0] = heights.max(1) <= tolerance
        sides[s:s + block, 1] = heights.min(1) >= -tolerance
    return sides & valid[:, None]


class RayCaster:
    """Closest-hit and occlusion queries against one triangle mesh.

    Args:
        mesh: the part, world space.
        device: "cpu" or "cuda": where the rays are traced when ``engine`` is "auto".
        engine: "auto" (:func:`default_engine`), "embree" or "mitsuba".

    Attributes:
        engine: the engine in use ("embree" or "mitsuba").
        epsilon: offset of secondary-ray origins from the surface, in scene units.
    """

    def __init__(self, mesh: Mesh, device: str = "cpu", engine: str = "auto"):
        name = default_engine(device) if engine in (None, "auto") else engine
        pos = np.ascontiguousarray(mesh.positions, dtype=np.float32)
        tri = np.ascontiguousarray(mesh.triangles)
        if name == "embree":
            self._engine = _EmbreeEngine(pos, tri)
        elif name == "mitsuba":
            self._engine = _MitsubaEngine(pos, tri, device)
        else:
            raise InputError(f"unknown ray engine '{engine}'; choose auto, {' or '.join(RAY_ENGINES)}")
        self.engine = self._engine.name
        extent = np.ptp(mesh.positions, axis=0)
        self.epsilon = float(1e-4 * max(np.linalg.norm(extent), 1e-9))
        self._mesh = mesh
        self._sides: np.ndarray | None = None  # supporting_sides(), once looked up

    def supporting_sides(self) -> np.ndarray:
        """(T, 2) bool per triangle of the mesh: whether the triangle's plane has the whole mesh
        on one side of it, to within a tenth of :attr:`epsilon`: ``[:, 0]`` every vertex on or
        behind the side the winding normal ``cross(v1 - v0, v2 - v0)`` points to, ``[:, 1]``
        every vertex on or in front of it. A ray leaving a point of the triangle, from
        :attr:`epsilon` off the surface on a supporting side, toward that side, can hit
        nothing of the mesh, so its shadow query can be skipped: every triangle of a convex
        part (its outside), both sides of a flat panel. False for degenerate triangles (their
        own corners off the plane their cross product gives), and for every triangle of a mesh
        larger than :data:`SUPPORT_TEST_LIMIT` (not tested). The test is in float64: for a
        part far from the world origin (float32 steps of its coordinates near :attr:`epsilon`)
        the ray engines' float32 origins can report the surface itself as a hit, which these
        rays, not traced, no longer do. Computed once per mesh content in a process (read-only)."""
        if self._sides is not None:
            return self._sides
        import hashlib

        pos = np.asarray(self._mesh.positions, dtype=np.float64)
        tri = np.asarray(self._mesh.triangles)
        key = (hashlib.sha1(np.ascontiguousarray(pos).view(np.uint8)).hexdigest(),
               hashlib.sha1(np.ascontiguousarray(tri).view(np.uint8)).hexdigest(), pos.shape, tri.shape)
        with _SIDES_LOCK:  # computed once, not by every view's thread at once
            sides = _SIDES.get(key)
            if sides is None:
                while len(_SIDES) >= _SIDES_KEPT:
                    _SIDES.pop(next(iter(_SIDES)))
                sides = _supporting_sides(pos, tri, 0.1 * self.epsilon)
                sides.setflags(write=False)
                _SIDES[key] = sides
        self._sides = sides
        return sides

    @staticmethod
    def _as_rays(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.ascontiguousarray(origins, dtype=np.float32),
                np.ascontiguousarray(directions, dtype=np.float32))

    def intersect(self, origins: np.ndarray, directions: np.ndarray,
                  max_distance: np.ndarray | None = None) -> RayHits:
        """Closest hits of rays ``origins + t * directions`` (directions unit length).

        Args:
            max_distance: (N,) per ray, in scene units, or None (unbounded): a ray reports
                only a hit at ``t <= max_distance`` (a miss beyond it). A bounded query stops
                its traversal there: a random walk's short flights cost a tenth of
                unbounded rays."""
        if len(origins) == 0:
            return RayHits.empty()
        o, d = self._as_rays(origins, directions)
        far = None if max_distance is None else np.ascontiguousarray(max_distance, dtype=np.float32)
        return RayHits.concatenate([self._engine.intersect(o[s:s + _CHUNK], d[s:s + _CHUNK],
                                                           None if far is None else far[s:s + _CHUNK])
                                    for s in range(0, len(o), _CHUNK)])

    def occluded(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """True where the ray hits the mesh anywhere ahead (shadow rays to infinity)."""
        o, d = self._as_rays(origins, directions)
        out = np.empty(len(o), dtype=bool)
        for s in range(0, len(o), _CHUNK):
            out[s:s + _CHUNK] = self._engine.occluded(o[s:s + _CHUNK], d[s:s + _CHUNK])
        return out
