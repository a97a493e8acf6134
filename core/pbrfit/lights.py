"""Analytic lights (UsdLux DistantLight, SphereLight, RectLight, DiskLight, CylinderLight) as
Cycles renders them, and sampling them from a shading point (next-event estimation).

Conventions (sources and checks: ``docs/lights-conventions.md``):

* Radiance is in the scene's radiance units (those of the HDRI: a DomeLight of intensity 1
  has its image's radiance). ``X = color * intensity * 2**exposure``; with
  ``inputs:enableColorTemperature``, ``color`` is multiplied by
  ``UsdLux.BlackbodyTemperatureAsRgb(colorTemperature)`` (Rec.709, luminance 1: 6500 K is
  not exactly white), which is what Blender's importer sets (``use_temperature``) and Cycles
  renders (Blender's ``temperature_color`` agrees with it to 0.5% from 1900 to 10000 K; below
  1900 K they part by up to 7%). UsdLux's range, 1000-10000 K, is enforced.
* SphereLight (radius > 0), RectLight, DiskLight: surface radiance ``X / A`` with
  ``inputs:normalize`` (A the world-space area, in square metres: stage units times
  ``metersPerUnit``), else ``X``. Rect and disk emit from one side, toward their local -Z;
  a sphere emits outward. This is the UsdLux definition and Cycles' (Blender's USD importer
  makes ``energy = pi * X``; Cycles' radiance is ``energy / (pi * A)``).
* CylinderLight: a tube along its local X of ``length`` and ``radius`` (the light's scale
  applied: X to the length, the mean of Y and Z to the radius) whose side emits outward, its
  end caps not at all (UsdLux); radiance ``X / (2 pi r length)`` with ``normalize``, else ``X``.
  ``treatAsLine`` is a hint UsdLux lets renderers ignore: the tube keeps its radius. Blender and
  Cycles have no such lamp; it is checked against Cycles rendering an emissive tube of that
  radiance (tests/test_lights_vs_cycles.py).
* SphereLight with radius 0 or ``treatAsPoint``: a point of intensity ``X / 4`` W/sr
  normalized (Cycles' point of power ``pi * X``: ``P / (4 pi)``), ``X`` not normalized.
* A spot (SphereLight with UsdLuxShapingAPI ``shaping:cone:angle``, Blender's Spot lamp):
  the sphere or point, times Cycles' spot attenuation ``smoothstep(t)``,
  ``t = (cos(theta) - cos(a)) / ((1 - cos(a)) * blend)`` with ``a`` the cone angle (the half
  angle: Blender writes half its spot size), ``blend`` the cone softness and ``theta`` the
  angle between the light's -Z and the emitted direction. This is Cycles' ramp, in cosine;
  UsdLux's text ramps in angle, and Blender's importer maps one to the other unchanged.
* DistantLight: light travels along its local -Z. As Blender reads and writes it,
  ``inputs:angle`` is the cone's *half*-angle in degrees (the UsdLux text says the full
  angle; Blender's exporter writes half of the sun's angle and its importer doubles it back)
  and the irradiance on a surface facing it is ``4 * X`` (Blender's importer: sun strength =
  4 x intensity), spread evenly over the cone; angle 0 is a delta light.

Lights do not show to camera rays (Blender's default) nor to rays leaving the part by BSDF
sampling: they enter only through the samples drawn here, so the estimate is unbiased for
any light size (noisier than Cycles' MIS on a near-mirror under a large light). Shadow rays
run to infinity, so a light must not sit between two parts of the part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .color import RGB_TO_XYZ
from .rotation import exp_so3

__all__ = ["AnalyticLight", "KINDS", "sample", "spot_attenuation", "irradiance_at", "lights_white", "read_lights",
           "usd_light"]

#: the light kinds, and the UsdLux types read as them
KINDS = {"distant": "DistantLight", "sphere": "SphereLight", "point": "SphereLight", "rect": "RectLight",
         "disk": "DiskLight", "cylinder": "CylinderLight"}


@dataclass(frozen=True)
class AnalyticLight:
    """One light in world space (stage units).

    Attributes:
        kind: a key of :data:`KINDS`.
        prim_path: the UsdLux prim it came from (for messages).
        radiance: (3,) emitted radiance of the light's surface; for a point, its intensity
            (radiance units x m^2, i.e. per steradian at 1 m); for a distant light with angle 0,
            its irradiance.
        position: (3,) centre (not used by distant lights).
        axes: (3, 3) rotation matrix (as nested rows) whose columns are the world directions
            of the light's local X, Y, Z.
        size: rect: (width, height); disk and sphere: (radius,); cylinder: (length, radius);
            distant: (half-angle radians,); world units (stage units, the light's scale applied).
        meters_per_unit: the stage's linear unit (inverse-square falloff is in metres).
        cone: a spot's (half-angle in radians, blend), or () (see the module docstring).
    """

    kind: str
    prim_path: str
    radiance: tuple
    position: tuple
    axes: tuple
    size: tuple
    meters_per_unit: float = 1.0
    cone: tuple = ()  # spot lights: (cone half-angle radians, blend 0..1); () for none

    def area_m2(self) -> float:
        """The emitting area in square metres (0 for points and distant lights)."""
        m2 = self.meters_per_unit ** 2
        if self.kind == "rect":
            return self.size[0] * self.size[1] * m2
        if self.kind == "disk":
            return math.pi * self.size[0] ** 2 * m2
        if self.kind == "sphere":
            return 4 * math.pi * self.size[0] ** 2 * m2
        if self.kind == "cylinder":
            return 2 * math.pi * self.size[0] * self.size[1] * m2
        return 0.0


def _cone(u: torch.Tensor, cos_max: torch.Tensor) -> torch.Tensor:
    """Uniform directions in the cone around +Z of half-angle acos(cos_max): (..., 3)."""
    cos_t = 1.0 - u[..., 0] * (1.0 - cos_max)
    sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp_min(0.0))
    phi = 2 * math.pi * u[..., 1]
    return torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], -1)


def _frame_around(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors completing unit z (..., 3) to an orthonormal frame (Duff et al. 2017)."""
    sign = torch.where(z[..., 2] >= 0, 1.0, -1.0).to(z.dtype)
    a = -1.0 / (sign + z[..., 2])
    b = z[..., 0] * z[..., 1] * a
    x = torch.stack([1.0 + sign * z[..., 0] ** 2 * a, sign * b, -sign * z[..., 0]], -1)
    y = torch.stack([b, sign + z[..., 1] ** 2 * a, -z[..., 1]], -1)
    return x, y


def spot_attenuation(light: AnalyticLight, wi: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Cycles' spot ramp (module docstring) for directions ``wi`` (..., 3) from the lit points
    toward the light; 1 without a cone. ``axes``: the light's axes (3, 3) if not its own."""
    if not light.cone:
        return torch.ones(wi.shape[:-1], dtype=wi.dtype)
    half, blend = light.cone
    z = (torch.as_tensor(np.asarray(light.axes), dtype=wi.dtype) if axes is None else axes.to(wi.dtype))[:, 2]
    cos_t = (wi * z).sum(-1)  # the emitted direction -wi against the light's -Z
    cos_a = math.cos(half)
    if blend <= 0:
        return (cos_t > cos_a).to(wi.dtype)
    t = ((cos_t - cos_a) / ((1 - cos_a) * blend)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def sample(light: AnalyticLight, points: torch.Tensor, u: torch.Tensor, rotation: torch.Tensor | None = None,
           translation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions toward ``light`` from world ``points`` (P, 3), one per uniform pair of
    ``u`` (P, N, 2): ``(wi (P, N, 3) unit world directions, weight (P, N, 3))`` with
    ``weight = L_e(wi) / pdf(wi)`` (solid angle), so that the mean over N of
    ``f(wi) * cos * weight`` estimates the light's reflected radiance. Zero weight where the
    sample sees the light's back or the point is inside a sphere light. float64.

    ``rotation`` (3,), a rotation vector in world space about the light's centre, and
    ``translation`` (3,), stage units, move the light first (differentiably: calibration)."""
    dt = torch.float64
    p = points.to(dt)[:, None, :]
    u = u.to(dt)
    le = torch.as_tensor(light.radiance, dtype=dt)
    axes = torch.as_tensor(np.asarray(light.axes), dtype=dt)
    centre = torch.as_tensor(light.position, dtype=dt)
    if rotation is not None:
        axes = exp_so3(rotation.to(dt)) @ axes
    if translation is not None:
        centre = centre + translation.to(dt)
    mpu = light.meters_per_unit
    if light.kind == "distant":
        half = light.size[0]
        z = axes[:, 2]
        if half <= 0:  # a delta light: every sample the same direction
            wi = z.expand(p.shape[0], u.shape[1], 3)
            return wi, le.expand(p.shape[0], u.shape[1], 3).clone()
        local = _cone(u, torch.tensor(math.cos(half), dtype=dt))
        wi = local @ axes.T
        solid = 2 * math.pi * (1 - math.cos(half))
        return wi, (le * solid).expand(wi.shape).clone()
    if light.kind == "point":
        d = centre - p
        dist2 = (d * d).sum(-1, keepdim=True).clamp_min(1e-30)
        wi = (d / dist2.sqrt()).expand(p.shape[0], u.shape[1], 3)
        return wi, (le / (dist2 * mpu * mpu)).expand(wi.shape) * spot_attenuation(light, wi, axes)[..., None]
    if light.kind == "sphere":
        r = light.size[0]
        d = centre - p
        dist2 = (d * d).sum(-1)
        inside = dist2 <= r * r
        sin2 = (r * r / dist2.clamp_min(1e-30)).clamp(0, 1)
        cos_max = torch.sqrt(1 - sin2)  # (P, 1)
        local = _cone(u, cos_max)
        z = d / dist2.clamp_min(1e-30).sqrt()[..., None]
        x, y = _frame_around(z)
        wi = local[..., :1] * x + local[..., 1:2] * y + local[..., 2:] * z
        solid = 2 * math.pi * (1 - cos_max)
        w = le * torch.where(inside, 0.0, solid)[..., None]
        return wi, w.expand(wi.shape) * spot_attenuation(light, wi, axes)[..., None]
    if light.kind == "cylinder":  # uniform on the half of the tube's side that faces each point
        length, r = light.size
        rel = p - centre
        ry, rz = (rel * axes[:, 1]).sum(-1), (rel * axes[:, 2]).sum(-1)
        ry = torch.where((ry == 0) & (rz == 0), torch.full_like(ry, 1e-12), ry)  # on the axis: any side (no NaN)
        phi0 = torch.atan2(rz, ry)  # (P, 1)
        phi = phi0 + (u[..., 1] - 0.5) * math.pi  # the visible arc lies within +-90 degrees of phi0
        normal = torch.cos(phi)[..., None] * axes[:, 1] + torch.sin(phi)[..., None] * axes[:, 2]
        q = centre + ((u[..., 0] - 0.5) * length)[..., None] * axes[:, 0] + r * normal
        d = q - p
        dist2 = (d * d).sum(-1).clamp_min(1e-30)
        wi = d / dist2.sqrt()[..., None]
        cos_light = -(wi * normal).sum(-1)  # emits outward
        return wi, le * (math.pi * r * length * cos_light.clamp_min(0) / dist2)[..., None]
    # rect and disk: uniform on the area
    if light.kind == "rect":
        w_, h_ = light.size
        a, b = (u[..., 0] - 0.5) * w_, (u[..., 1] - 0.5) * h_
        area = w_ * h_
    elif light.kind == "disk":
        rad = light.size[0] * torch.sqrt(u[..., 0])
        phi = 2 * math.pi * u[..., 1]
        a, b = rad * torch.cos(phi), rad * torch.sin(phi)
        area = math.pi * light.size[0] ** 2
    else:
        raise ValueError(f"unknown light kind {light.kind!r}")
    q = centre + a[..., None] * axes[:, 0] + b[..., None] * axes[:, 1]
    d = q - p
    dist2 = (d * d).sum(-1).clamp_min(1e-30)
    wi = d / dist2.sqrt()[..., None]
    cos_light = (wi * axes[:, 2]).sum(-1)  # emits toward -Z: seen from where wi . Z > 0
    w = le * (area * cos_light.clamp_min(0) / dist2)[..., None]
    return wi, w


def irradiance_at(light: AnalyticLight, point, normal, samples: int = 4096) -> np.ndarray:
    """(3,) irradiance the light gives a surface at ``point`` facing ``normal`` (world),
    unshadowed: a Monte Carlo mean of :func:`sample` (exact for points and distant lights)."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1, samples, 2, generator=g, dtype=torch.float64)
    wi, w = sample(light, torch.as_tensor(np.asarray(point, np.float64))[None], u)
    cos = (wi * torch.as_tensor(np.asarray(normal, np.float64))).sum(-1).clamp_min(0)
    return (w * cos[..., None]).mean(1)[0].numpy()


def read_lights(stage, time=None) -> list[AnalyticLight]:
    """The analytic lights of a USD stage (active, not invisible), in world space.

    Raises:
        InputError: a light this renderer does not support (a portal, a geometry light, a cone
            on anything but a SphereLight), or a light with
            intensity that is not positive or no size.
    """
    from pxr import Gf, Usd, UsdGeom, UsdLux

    from .errors import InputError

    time = Usd.TimeCode.Default() if time is None else time
    mpu = UsdGeom.GetStageMetersPerUnit(stage) or 1.0
    out = []
    for prim in stage.Traverse():
        if not prim.HasAPI(UsdLux.LightAPI) or prim.IsA(UsdLux.DomeLight) or prim.IsA(UsdLux.DomeLight_1):
            continue
        if UsdGeom.Imageable(prim).ComputeVisibility(time) == UsdGeom.Tokens.invisible:
            continue
        path = str(prim.GetPath())
        kinds = {UsdLux.DistantLight: "distant", UsdLux.SphereLight: "sphere", UsdLux.RectLight: "rect",
                 UsdLux.DiskLight: "disk", UsdLux.CylinderLight: "cylinder"}
        kind = next((k for t, k in kinds.items() if prim.IsA(t)), None)
        if kind is None:
            raise InputError(f"light {path} is a {prim.GetTypeName()}, which pbrfit does not render; supported: "
                             "DistantLight, SphereLight, RectLight, DiskLight, CylinderLight (and one DomeLight). "
                             "Replace it or deactivate it")
        light = UsdLux.LightAPI(prim)

        def get(attr, default):
            v = attr.Get(time) if attr and attr.HasAuthoredValue() else None
            return default if v is None else v

        intensity = float(get(light.GetIntensityAttr(), 1.0))
        exposure = float(get(light.GetExposureAttr(), 0.0))
        color = np.asarray(get(light.GetColorAttr(), Gf.Vec3f(1, 1, 1)), np.float64)
        normalize = bool(get(light.GetNormalizeAttr(), False))
        if bool(get(light.GetEnableColorTemperatureAttr(), False)):
            kelvin = float(get(light.GetColorTemperatureAttr(), 6500.0))
            if not 1000.0 <= kelvin <= 10000.0:
                raise InputError(f"light {path}: inputs:colorTemperature {kelvin:g} K is outside UsdLux's "
                                 "1000-10000 K; set a temperature in that range or disable "
                                 "inputs:enableColorTemperature")
            color = color * np.asarray(UsdLux.BlackbodyTemperatureAsRgb(kelvin), np.float64)
        cone = ()
        if prim.HasAPI(UsdLux.ShapingAPI) and UsdLux.ShapingAPI(prim).GetShapingConeAngleAttr().HasAuthoredValue():
            shaping = UsdLux.ShapingAPI(prim)
            if kind != "sphere":
                raise InputError(f"light {path}: a shaping cone on a {prim.GetTypeName()} is not supported; pbrfit "
                                 "renders cones on SphereLights (spot lights) only: remove the cone")
            angle = float(get(shaping.GetShapingConeAngleAttr(), 90.0))
            cone = (math.radians(min(max(angle, 0.0), 180.0)), min(max(float(get(
                shaping.GetShapingConeSoftnessAttr(), 0.0)), 0.0), 1.0))
        if not (intensity > 0 and math.isfinite(intensity)) or not (color >= 0).all() or not color.any():
            raise InputError(f"light {path}: intensity {intensity:g} and color {tuple(color)} give no light; a "
                             "light must have a positive intensity and a non-black colour (deactivate it instead)")
        x = color * intensity * 2.0 ** exposure
        m = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time), np.float64).T  # column vectors
        cols = m[:3, :3]
        scale = np.linalg.norm(cols, axis=0)
        axes = cols / np.where(scale > 0, scale, 1.0)
        position = m[:3, 3]
        if kind == "distant":  # as Blender reads it: the half-angle
            size = (math.radians(float(get(UsdLux.DistantLight(prim).GetAngleAttr(), 0.53))),)
        elif kind == "sphere":
            s = UsdLux.SphereLight(prim)
            r = float(get(s.GetRadiusAttr(), 0.5)) * float(scale.mean())
            kind, size = ("point", (0.0,)) if bool(get(s.GetTreatAsPointAttr(), False)) or r <= 0 else ("sphere", (r,))
        elif kind == "rect":
            s = UsdLux.RectLight(prim)
            size = (float(get(s.GetWidthAttr(), 1.0)) * scale[0], float(get(s.GetHeightAttr(), 1.0)) * scale[1])
        elif kind == "cylinder":
            s = UsdLux.CylinderLight(prim)
            size = (float(get(s.GetLengthAttr(), 1.0)) * scale[0], float(get(s.GetRadiusAttr(), 0.5)) *
                    float(scale[1:].mean()))
        else:
            s = UsdLux.DiskLight(prim)
            size = (float(get(s.GetRadiusAttr(), 0.5)) * float(scale[:2].mean()),)
        if kind in ("rect", "disk", "sphere", "cylinder") and min(size) <= 0:
            raise InputError(f"light {path} has zero size; give it a positive size or deactivate it")
        out.append(usd_light(kind, path, x, normalize, position, axes, size, mpu, cone))
    return out


def usd_light(kind: str, prim_path: str, x, normalize: bool, position, axes, size, meters_per_unit: float = 1.0,
              cone: tuple = ()) -> AnalyticLight:
    """The light of UsdLux terms: ``x = color * intensity * 2**exposure`` and ``normalize``,
    turned into :attr:`AnalyticLight.radiance` as the module docstring says (the one place
    this conversion lives; the Blender add-on maps its lamps to these terms as Blender's USD
    exporter does). ``size`` as :class:`AnalyticLight`'s, positive for areas and spheres."""
    x = np.asarray(x, np.float64)
    m2 = meters_per_unit**2
    if kind == "distant":  # irradiance 4 x X (Blender's sun), spread over the cone
        half = size[0]
        radiance = 4.0 * x / (math.pi * math.sin(half) ** 2) if half > 0 and normalize else 4.0 * x
    elif kind == "point":
        radiance = x / 4.0 if normalize else x
    elif kind == "sphere":
        radiance = x / (4 * math.pi * size[0] ** 2 * m2) if normalize else x
    elif kind == "rect":
        radiance = x / (size[0] * size[1] * m2) if normalize else x
    elif kind == "disk":
        radiance = x / (math.pi * size[0] ** 2 * m2) if normalize else x
    elif kind == "cylinder":
        radiance = x / (2 * math.pi * size[0] * size[1] * m2) if normalize else x
    else:
        raise ValueError(f"unknown light kind {kind!r}")
    return AnalyticLight(kind, prim_path, tuple(float(v) for v in radiance), tuple(float(v) for v in position),
                         tuple(map(tuple, np.asarray(axes, np.float64))), tuple(float(v) for v in size),
                         float(meters_per_unit), tuple(cone))


def lights_white(lights, centre) -> float:
    """Luminance (Rec.709) of the irradiance each light gives a surface at ``centre``
    facing it (world), summed, over pi: what a white Lambertian facing each light in turn
    would reflect. Part of a view's white (:meth:`pbrfit.scene_renderer.SceneRenderer.white`)."""
    centre = np.asarray(centre, np.float64)
    total = 0.0
    for light in lights:
        if light.kind == "distant":
            facing = np.asarray(light.axes)[:, 2]
        else:
            facing = np.asarray(light.position) - centre
            facing = facing / max(np.linalg.norm(facing), 1e-30)
        e = irradiance_at(light, centre, facing)
        total += float(np.dot(RGB_TO_XYZ[1], e)) / math.pi
    return total
