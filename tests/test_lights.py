"""Analytic lights (pbrfit.lights): sampling against closed-form irradiance, UsdLux reading."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pxr import Gf, Usd, UsdGeom, UsdLux

from pbrfit.errors import InputError
from pbrfit.lights import AnalyticLight, irradiance_at, read_lights

#: the light's local axes in world (matrix columns X, Y, Z): emitting along local -Z = world -Z (down)
AXES = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
#: turned over: emitting up, away from a point below it
UPWARD = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


def _light(kind, size, position=(0.0, 0.0, 0.0), axes=AXES, radiance=(1.0, 1.0, 1.0), mpu=1.0):
    return AnalyticLight(kind, "/L", radiance, position, axes, size, mpu)


def _corner_factor(a, b, c):
    """Configuration factor from a point to a rectangle a x b with one corner above it at height c."""
    A, B = a / c, b / c
    return (A / math.sqrt(1 + A * A) * math.atan(B / math.sqrt(1 + A * A))
            + B / math.sqrt(1 + B * B) * math.atan(A / math.sqrt(1 + B * B))) / (2 * math.pi)


def test_each_light_gives_its_closed_form_irradiance():
    up, at = (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)
    d = 2.0
    # a point of intensity I at distance d: I / d^2 (and in centimetres: distances are metres)
    assert irradiance_at(_light("point", (0.0,), (0, 0, d)), at, up)[0] == pytest.approx(1 / d**2)
    assert irradiance_at(_light("point", (0.0,), (0, 0, 200.0), mpu=0.01), at, up)[0] == pytest.approx(1 / d**2)
    # a sphere of radiance L, radius r: pi L r^2 / d^2 facing it
    r = 0.5
    assert irradiance_at(_light("sphere", (r,), (0, 0, d)), at, up)[0] == pytest.approx(math.pi * r * r / d**2,
                                                                                        rel=0.02)
    # a disk facing the point on its axis: pi L r^2 / (r^2 + d^2)
    assert irradiance_at(_light("disk", (r,), (0, 0, d)), at, up)[0] == pytest.approx(
        math.pi * r * r / (r * r + d * d), rel=0.02)
    # a rect w x h centred on the axis: four corner rectangles
    w, h = 1.0, 0.6
    e = 4 * math.pi * _corner_factor(w / 2, h / 2, d)
    assert irradiance_at(_light("rect", (w, h), (0, 0, d)), at, up)[0] == pytest.approx(e, rel=0.02)
    # seen from behind, a rect or disk gives nothing
    assert irradiance_at(_light("rect", (w, h), (0, 0, d), axes=UPWARD), at, up)[0] == 0.0
    # a distant light of half-angle a and radiance L: pi L sin^2 a facing it; a delta one: its irradiance
    half = math.radians(5.0)
    assert irradiance_at(_light("distant", (half,), axes=AXES), at, up)[0] == pytest.approx(
        math.pi * math.sin(half) ** 2, rel=1e-3)
    assert irradiance_at(_light("distant", (0.0,), axes=AXES), at, up)[0] == pytest.approx(1.0)
    # inside a sphere light: nothing (the part would be inside the lamp)
    assert irradiance_at(_light("sphere", (3.0,), (0, 0, d)), at, up)[0] == 0.0


def _tube_irradiance_by_quadrature(length, r, centre, point, normal, n=(4000, 1440)):
    """Irradiance from a tube of radiance 1 (axis along X, side emitting outward) by a dense
    midpoint quadrature over its side: an oracle independent of the sampler."""
    x = (np.arange(n[0]) + 0.5) / n[0] * length - length / 2
    phi = (np.arange(n[1]) + 0.5) / n[1] * 2 * math.pi
    X, P = np.meshgrid(x, phi, indexing="ij")
    nq = np.stack([np.zeros_like(P), np.cos(P), np.sin(P)], -1)
    q = np.asarray(centre) + np.stack([X, np.zeros_like(X), np.zeros_like(X)], -1) + r * nq
    d = q - np.asarray(point)
    dist2 = (d * d).sum(-1)
    w = d / np.sqrt(dist2)[..., None]
    cos_p = np.clip(w @ np.asarray(normal, float), 0, None)
    cos_l = np.clip(-(w * nq).sum(-1), 0, None)
    return float((cos_p * cos_l / dist2).sum() * (length / n[0]) * (r * 2 * math.pi / n[1]))


def test_a_tube_light_gives_what_its_side_radiates():
    """CylinderLight: sampled over the half of its side facing the point, against a quadrature
    over all of it (facing the tube, beside one end, and at a slant); nothing from its axis' ends."""
    length, r = 3.0, 0.25
    tube = _light("cylinder", (length, r), (0.0, 0.0, 1.5))
    for point, normal in (((0, 0, 0), (0, 0, 1)), ((1.2, 0.3, 0.2), (0, 0, 1)), ((0.5, 0, 0), (0.6, 0, 0.8))):
        expected = _tube_irradiance_by_quadrature(length, r, (0.0, 0.0, 1.5), point, normal)
        assert irradiance_at(tube, point, normal, samples=20000)[0] == pytest.approx(expected, rel=0.02), point
    far_along_axis = irradiance_at(tube, (10.0, 0, 1.5), (-1.0, 0, 0))[0]  # the caps do not emit
    assert far_along_axis < 1e-3


def _stage(tmp_path, mpu=1.0):
    stage = Usd.Stage.CreateNew(str(tmp_path / "lights.usda"))
    UsdGeom.SetStageMetersPerUnit(stage, mpu)
    return stage


def test_usdlux_lights_are_read_as_blender_reads_them(tmp_path):
    stage = _stage(tmp_path)
    sun = UsdLux.DistantLight.Define(stage, "/Sun")
    sun.CreateIntensityAttr(0.75)  # Blender writes strength / 4: a 3 W/m^2 sun
    sun.CreateAngleAttr(5.0)  # Blender writes the half-angle
    sun.CreateNormalizeAttr(True)
    sphere = UsdLux.SphereLight.Define(stage, "/Lamp")
    sphere.CreateIntensityAttr(100 / math.pi)  # a 100 W point lamp of radius 0.25
    sphere.CreateRadiusAttr(0.25)
    sphere.CreateNormalizeAttr(True)
    sphere.CreateExposureAttr(1.0)
    UsdGeom.Xformable(sphere).AddTranslateOp().Set(Gf.Vec3d(0, 0, 3))
    point = UsdLux.SphereLight.Define(stage, "/Point")
    point.CreateIntensityAttr(8.0)
    point.CreateTreatAsPointAttr(True)
    point.CreateNormalizeAttr(True)
    rect = UsdLux.RectLight.Define(stage, "/Softbox")
    rect.CreateIntensityAttr(2.0)
    rect.CreateWidthAttr(2.0)
    rect.CreateHeightAttr(0.5)
    rect.CreateColorAttr(Gf.Vec3f(1.0, 0.5, 0.25))
    lights = {light.prim_path: light for light in read_lights(stage)}
    s = lights["/Sun"]
    assert s.kind == "distant" and s.size[0] == pytest.approx(math.radians(5.0))
    assert irradiance_at(s, (0, 0, 0), (0, 0, 1))[0] == pytest.approx(3.0, rel=1e-3)  # Blender's sun strength
    lamp = lights["/Lamp"]
    assert lamp.kind == "sphere" and lamp.position == pytest.approx((0, 0, 3))
    # Cycles: a 100 W sphere lamp (x2 exposure) gives P / (4 pi d^2) on axis
    assert irradiance_at(lamp, (0, 0, 0), (0, 0, 1))[0] == pytest.approx(200 / (4 * math.pi * 9), rel=0.02)
    assert lights["/Point"].kind == "point" and lights["/Point"].radiance[0] == pytest.approx(2.0)
    soft = lights["/Softbox"]
    assert soft.size == pytest.approx((2.0, 0.5)) and soft.radiance == pytest.approx((2.0, 1.0, 0.5))  # not normalized


def test_colour_temperature_multiplies_the_colour_as_usdlux_defines_it(tmp_path):
    """``enableColorTemperature``: ``color`` times UsdLux's blackbody colour (what Blender's
    importer and Cycles use; checked against Cycles in test_lights_vs_cycles' warm case)."""
    stage = _stage(tmp_path)
    for name, enable in (("Warm", True), ("Off", False)):
        light = UsdLux.SphereLight.Define(stage, f"/{name}")
        light.CreateTreatAsPointAttr(True)
        light.CreateColorAttr(Gf.Vec3f(0.5, 1.0, 1.0))
        light.CreateEnableColorTemperatureAttr(enable)
        light.CreateColorTemperatureAttr(3200.0)
    lights = {light.prim_path: light for light in read_lights(stage)}
    assert lights["/Off"].radiance == pytest.approx((0.5, 1.0, 1.0))
    expected = np.array([0.5, 1.0, 1.0]) * np.array(UsdLux.BlackbodyTemperatureAsRgb(3200.0))
    assert lights["/Warm"].radiance == pytest.approx(tuple(expected), rel=1e-6)
    assert lights["/Warm"].radiance[0] > lights["/Warm"].radiance[2]  # warm: red over blue


@pytest.mark.parametrize("make, message", [
    (lambda st: UsdLux.GeometryLight.Define(st, "/Glow"), "GeometryLight"),
    (lambda st: UsdLux.SphereLight.Define(st, "/Off").CreateIntensityAttr(0.0), "positive intensity"),
    (lambda st: UsdLux.SphereLight.Define(st, "/Neg").CreateIntensityAttr(-5.0), "positive intensity"),
    (lambda st: UsdLux.RectLight.Define(st, "/Flat").CreateWidthAttr(0.0), "zero size"),
    (lambda st: (UsdLux.SphereLight.Define(st, "/Hot").CreateEnableColorTemperatureAttr(True),
                 UsdLux.SphereLight(st.GetPrimAtPath("/Hot")).CreateColorTemperatureAttr(40000.0)), "1000-10000 K"),
], ids=["geometry", "zero", "negative", "zero size", "temperature"])
def test_lights_the_renderer_cannot_render_are_refused_by_name(tmp_path, make, message):
    stage = _stage(tmp_path)
    make(stage)
    with pytest.raises(InputError, match=message) as e:
        read_lights(stage)
    assert "/" in str(e.value) and "\n" not in str(e.value)


def test_a_spot_ramps_in_cosine_as_cycles_does_and_a_cone_elsewhere_is_refused(tmp_path):
    stage = _stage(tmp_path)
    spot = UsdLux.SphereLight.Define(stage, "/Spot")
    spot.CreateTreatAsPointAttr(True)
    shaping = UsdLux.ShapingAPI.Apply(spot.GetPrim())
    shaping.CreateShapingConeAngleAttr(30.0)
    shaping.CreateShapingConeSoftnessAttr(0.3)
    UsdGeom.Xformable(spot).AddTranslateOp().Set(Gf.Vec3d(0, 0, 1))  # pointing down (-Z) at the XY plane
    (light,) = read_lights(stage)
    assert light.kind == "point" and light.cone == pytest.approx((math.radians(30.0), 0.3))
    cos_a = math.cos(math.radians(30.0))
    for off_axis in (0.0, 20.0, 25.0, 28.0, 31.0):
        x = math.tan(math.radians(off_axis))  # a point on the plane seen off_axis degrees from the axis
        d2 = 1 + x * x
        t = min(max((math.cos(math.radians(off_axis)) - cos_a) / ((1 - cos_a) * 0.3), 0.0), 1.0)
        expected = light.radiance[0] / d2 * t * t * (3 - 2 * t)
        up_to_light = np.array([-x, 0.0, 1.0]) / math.sqrt(d2)
        assert irradiance_at(light, (x, 0, 0), up_to_light)[0] == pytest.approx(expected, rel=1e-6, abs=1e-12), off_axis
    rect = UsdLux.RectLight.Define(stage, "/ConeOnARect")
    UsdLux.ShapingAPI.Apply(rect.GetPrim()).CreateShapingConeAngleAttr(30.0)
    with pytest.raises(InputError, match="/ConeOnARect.*SphereLights"):
        read_lights(stage)


def _rig_job(tmp_path, views: list[str]):
    """The synthetic sphere (with its dome) plus two softboxes under /World/RigA and
    /World/RigB; one view per entry of ``views``, whose text is appended to the view."""
    from synthetic import render_references, write_job

    job = write_job(tmp_path, size=32, cameras=len(views))
    stage = Usd.Stage.Open(str(tmp_path / "scene.usda"))
    for rig, x in (("RigA", 3.0), ("RigB", -3.0)):
        UsdGeom.Xform.Define(stage, f"/World/{rig}")
        box = UsdLux.RectLight.Define(stage, f"/World/{rig}/Box")
        box.CreateIntensityAttr(4.0)
        UsdGeom.Xformable(box).AddTranslateOp().Set(Gf.Vec3d(x, 0, 0))
        UsdGeom.Xformable(box).AddRotateYOp().Set(90.0 if x > 0 else -90.0)
    stage.GetRootLayer().Save()
    parts = job.read_text().split("[[views]]")
    for i, extra in enumerate(views):
        parts[i + 1] = parts[i + 1].rstrip("\n") + "\n" + extra + "\n\n"
    job.write_text("[[views]]".join(parts))
    render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.5}, seed=1)
    return job


def test_a_view_names_its_light_rig(tmp_path):
    from pbrfit.job import load_job

    job = load_job(_rig_job(tmp_path, ['lights = "/World/RigA/"', 'lights = ["/World/RigB/Box"]', "lights = []",
                                       ""]))
    names = [[li.prim_path for li in v.lights] for v in job.scene.views]
    assert names == [["/World/RigA/Box"], ["/World/RigB/Box"], [], ["/World/RigA/Box", "/World/RigB/Box"]]
    # each rig lights its own side of the sphere in the references rendered per view
    a, b = job.scene.views[0].image, job.scene.views[2].image
    assert a.sum() > 1.05 * b.sum()  # a softbox adds to the dome alone


@pytest.mark.parametrize("value, message", [
    ('"/World/Nope"', "not a prim"),
    ('"/World/Part"', "holds no active, visible light"),
    ("5", "prim path or a list"),
    ('["World/RigA"]', "prim path or a list"),
], ids=["missing", "no light", "number", "relative"])
def test_a_light_rig_that_is_not_there_is_refused_by_name(tmp_path, value, message):
    from pbrfit.job import load_job

    job = _rig_job(tmp_path, ["# rig"])
    job.write_text(job.read_text().replace("# rig", f"lights = {value}"))
    with pytest.raises(InputError, match=message) as e:
        load_job(job)
    assert "view" in str(e.value) and "\n" not in str(e.value)


def test_a_cylinder_light_is_read_with_its_scale_and_normalized_by_its_side(tmp_path):
    stage = _stage(tmp_path, mpu=0.01)  # centimetres: the area is in square metres
    tube = UsdLux.CylinderLight.Define(stage, "/Tube")
    tube.CreateLengthAttr(100.0)
    tube.CreateRadiusAttr(5.0)
    tube.CreateIntensityAttr(3.0)
    tube.CreateNormalizeAttr(True)
    UsdGeom.Xformable(tube).AddScaleOp().Set(Gf.Vec3f(2.0, 1.0, 1.0))
    (light,) = read_lights(stage)
    assert light.kind == "cylinder" and light.size == pytest.approx((200.0, 5.0))
    assert light.area_m2() == pytest.approx(2 * math.pi * 0.05 * 2.0)
    assert light.radiance[0] == pytest.approx(3.0 / light.area_m2())
