"""pbrfit.usd_stage against stages written by Blender's own USD exporter (with Blender's
values as the oracle) and against small stages written here with pxr."""

import math

import numpy as np
import pytest
import stage_builders as sb

from pbrfit.errors import InputError
from pbrfit.usd_stage import default_world_from_dome, read_stage, rotate_xyz


@pytest.fixture(scope="session")
def blender(blender_dir):
    return {name: read_stage(blender_dir / f"{name}.usda") for name in ("plain", "mapping")}


# --- Blender's exporter -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["plain", "mapping"])
def test_blender_mesh_matches_blender(blender, blender_dir, name):
    truth = sb.truth(blender_dir)
    c = blender[name]
    assert c.target == "/root/Part/PartMesh" and c.up_axis == "Z" and c.meters_per_unit == 1.0
    m = c.mesh
    assert m.triangles.shape == (truth["part_triangles"], 3)
    assert np.allclose(m.positions, truth["part_points_world"], atol=1e-5)
    a, b, cc = (m.positions[m.triangles[:, i]] for i in range(3))
    cross = np.cross(b - a, cc - a)
    assert math.isclose(0.5 * np.linalg.norm(cross, axis=1).sum(), truth["part_area_world"], rel_tol=1e-6)
    # counter-clockwise seen from outside: geometric normals point away from the centre
    centre = m.positions.mean(axis=0)
    assert (np.einsum("ij,ij->i", cross, (a + b + cc) / 3 - centre) > 0).all()
    # shading normals: Blender's smooth vertex normals, inverse-transpose transformed
    vertex_normals = np.asarray(truth["part_vertex_normals_world"])
    assert m.normals.shape == (len(m.triangles), 3, 3)
    assert np.allclose(m.normals, vertex_normals[m.triangles], atol=1e-5)
    # uvs: every corner's (vertex, uv) pair is one of Blender's loops
    loops = {(int(v), round(u, 4), round(w, 4)) for v, u, w in truth["part_loop_uvs"]}
    corners = {(int(v), round(float(u), 4), round(float(w), 4))
               for v, (u, w) in zip(m.triangles.ravel(), m.uvs.reshape(-1, 2))}
    assert corners <= loops and len(corners) == len(loops)


@pytest.mark.parametrize("name", ["plain", "mapping"])
def test_blender_camera_matches_blender(blender, blender_dir, name):
    truth = sb.truth(blender_dir)
    c = blender[name]
    cam = c.camera("/root/Cam")  # the Xform; Blender puts the Camera below it
    assert cam is c.cameras["/root/Cam/CamData"] and list(c.cameras) == ["/root/Cam/CamData"]
    assert np.allclose(cam.world_from_camera, truth["camera_matrix_world"], atol=1e-6)
    fov = 2 * math.atan(cam.horizontal_aperture / (2 * cam.focal_length))
    blender_fov = 2 * math.atan(truth["camera_sensor_width_mm"] / (2 * truth["camera_lens_mm"]))
    assert math.isclose(fov, blender_fov, rel_tol=1e-6)
    w, h = truth["resolution"]
    assert math.isclose(cam.aspect, w / h, rel_tol=1e-6)
    assert np.allclose(cam.clipping_range, truth["camera_clip"], rtol=1e-6)
    assert cam.horizontal_aperture_offset == 0 and cam.vertical_aperture_offset == 0


@pytest.mark.parametrize("name", ["plain", "mapping"])
def test_blender_dome_points_the_pole_up_and_the_centre_along_x(blender, blender_dir, name):
    dome = blender[name].dome
    assert dome.prim_path == "/root/env_light"
    assert dome.texture_file() == blender_dir / "forest.exr"
    assert dome.texture_format == "automatic"
    assert np.allclose(dome.scale, 1.0)
    r = dome.world_from_dome
    assert np.allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-6)  # pole -> world +Z
    assert np.allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-6)  # image centre -> world +X
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-6)  # u = 0.25 -> world +Y (Blender)
    assert np.allclose(r, rotate_xyz(90, 0, 90)) and np.allclose(r, default_world_from_dome("Z"))


def test_blender_dome_xform_ops_as_exported(blender):
    """What Blender 5.0.1 writes: rotateXYZ (0, 0, 0) without a Mapping node, (90, 0, 90) with."""
    from pxr import Gf, UsdGeom
    ops = {n: [op.GetOpName() for op in UsdGeom.Xformable(c.stage.GetPrimAtPath("/root/env_light"))
               .GetOrderedXformOps()] for n, c in blender.items()}
    assert ops == {"plain": ["xformOp:rotateXYZ"], "mapping": ["xformOp:rotateXYZ"]}
    values = {n: c.stage.GetPrimAtPath("/root/env_light").GetAttribute("xformOp:rotateXYZ").Get()
              for n, c in blender.items()}
    assert Gf.IsClose(values["plain"], Gf.Vec3f(0, 0, 0), 1e-6)
    assert Gf.IsClose(values["mapping"], Gf.Vec3f(90, 0, 90), 1e-4)


def test_blender_material_preview_and_openpbr(blender, blender_dir):
    truth = sb.truth(blender_dir)["material"]
    plain, mapping = blender["plain"], blender["mapping"]
    assert plain.material_source.endswith("(UsdPreviewSurface)")
    assert mapping.material_source.endswith("(OpenPBR)")
    for c in (plain, mapping):
        for key, value in truth.items():
            assert np.allclose(c.material[key], value, atol=1e-6), (c.material_source, key)
        assert math.isclose(c.material["specular_ior_level"], 0.5, abs_tol=1e-6)
    assert mapping.material["coat_tint"] == [1.0, 1.0, 1.0] and mapping.material["thin_film_thickness"] == 0.0


def test_blender_stage_files_are_listed(blender, blender_dir):
    assert blender["plain"].files == [str((blender_dir / "plain.usda").resolve())]


# --- a Y-up centimetre stage ---------------------------------------------------------------

def test_y_up_centimetre_stage(tmp_path):
    quad = dict(sb.QUAD, points=[(0, 0, 0), (200, 0, 0), (200, 100, 0), (0, 100, 0)], translate=(10, 20, 30))
    path = sb.make_stage(tmp_path / "cm.usda", up="Y", meters_per_unit=0.01, meshes={"/World/Part": quad},
                         cameras={"/World/Cam": dict(translate=(100, 50, 500), rotate_xyz=(0, 30, 0))},
                         dome=dict(texture="env.exr"))
    c = read_stage(path, target="/World/Part")
    assert c.up_axis == "Y" and c.meters_per_unit == 0.01
    assert len(c.mesh.triangles) == 2
    assert np.allclose(c.mesh.positions, np.array(quad["points"]) + [10, 20, 30])  # no unit conversion
    a, b, cc = (c.mesh.positions[c.mesh.triangles[:, i]] for i in range(3))
    cross = np.cross(b - a, cc - a)
    assert math.isclose(0.5 * np.linalg.norm(cross, axis=1).sum(), 20000.0)
    assert (cross[:, 2] > 0).all()  # counter-clockwise seen from +Z
    assert c.mesh.normals is None and c.mesh.uvs is None
    cam = c.camera("/World/Cam")
    assert np.allclose(cam.world_from_camera[:3, 3], [100, 50, 500])
    assert np.allclose(cam.world_from_camera[:3, :3] @ [0, 0, -1], [-math.sin(math.radians(30)), 0,
                                                                    -math.cos(math.radians(30))])
    assert np.allclose(c.dome.world_from_dome, np.eye(3))  # Y-up: the dome frame is the world frame
    assert c.dome.texture == str(tmp_path / "env.exr")
    assert np.allclose(default_world_from_dome("Y"), np.eye(3))


# --- dome orientation rules ----------------------------------------------------------------

@pytest.mark.parametrize("up, dome, pole_to, centre_to", [
    ("Z", dict(v1=True), (0, 0, 1), (0, -1, 0)),                        # DomeLight_1, poleAxis scene
    ("Z", dict(v1=True, pole_axis="Y"), (0, 1, 0), (0, 0, 1)),
    ("Y", dict(v1=True, pole_axis="Z"), (0, 0, 1), (0, -1, 0)),
    ("Y", dict(v1=True), (0, 1, 0), (0, 0, 1)),
    ("Z", dict(rotate_xyz=(90, 0, 0)), (0, 0, 1), (0, -1, 0)),          # OrientToStageUpAxis style
    ("Z", dict(), (0, 0, 1), (1, 0, 0)),                                # no xform: Blender's rule
    ("Z", dict(pole_axis="Z"), (0, 0, 1), (0, -1, 0)),                  # poleAxis on a plain DomeLight
    ("Z", dict(v1=True, rotate_xyz=(0, 0, 90)), (0, 0, 1), (1, 0, 0)),  # scene pole, then the xform
    ("Y", dict(rotate_xyz=(0, 90, 0)), (0, 1, 0), (1, 0, 0)),
])
def test_dome_orientation(tmp_path, up, dome, pole_to, centre_to):
    path = sb.make_stage(tmp_path / "s.usda", up=up, dome=dict(dome, texture="env.exr"))
    r = read_stage(path).dome.world_from_dome
    assert np.allclose(r @ [0, 1, 0], pole_to, atol=1e-6)
    assert np.allclose(r @ [0, 0, 1], centre_to, atol=1e-6)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)


def test_dome_scale_and_texture_anchored_in_its_layer(tmp_path):
    from pxr import Sdf, Usd, UsdLux
    (tmp_path / "lights").mkdir()
    (tmp_path / "lights" / "sky.exr").write_bytes(b"")
    sub = Sdf.Layer.CreateNew(str(tmp_path / "lights" / "light.usda"))
    sub.Save()
    root = sb.make_stage(tmp_path / "shot.usda", dome=None)
    stage = Usd.Stage.Open(str(root))
    stage.GetRootLayer().subLayerPaths.append("lights/light.usda")
    stage.SetEditTarget(Usd.EditTarget(Sdf.Layer.FindOrOpen(str(tmp_path / "lights" / "light.usda"))))
    light = UsdLux.DomeLight.Define(stage, "/World/Sky")
    light.CreateTextureFileAttr(Sdf.AssetPath("sky.exr"))
    light.CreateIntensityAttr(2.0)
    light.CreateExposureAttr(1.0)
    light.CreateColorAttr((0.5, 1.0, 0.25))
    stage.GetRootLayer().Save()
    Sdf.Layer.FindOrOpen(str(tmp_path / "lights" / "light.usda")).Save()
    c = read_stage(root)
    assert c.dome.texture_file() == tmp_path / "lights" / "sky.exr"
    assert np.allclose(c.dome.scale, [2.0, 4.0, 1.0])
    assert str(tmp_path / "lights" / "light.usda") in c.files
    (tmp_path / "lights" / "sky.exr").unlink()  # unresolvable now: still anchored to its layer
    c = read_stage(root)
    assert c.dome.texture == str(tmp_path / "lights" / "sky.exr")
    with pytest.raises(InputError, match="sky.exr"):
        c.dome.texture_file()


# --- mesh details ---------------------------------------------------------------------------

PENTAGON = [(math.cos(2 * math.pi * k / 5), math.sin(2 * math.pi * k / 5), 0) for k in range(5)]


def test_fan_triangulation_holes_and_degenerate_faces(tmp_path):
    mesh = dict(points=PENTAGON + [(0, 0, 1)], counts=[5, 3, 2, 3], indices=[0, 1, 2, 3, 4, 0, 1, 5, 0, 1, 1, 2, 5],
                holes=[1])
    c = read_stage(sb.make_stage(tmp_path / "s.usda", meshes={"/World/P": mesh}))
    # pentagon -> 3 triangles (0,1,2)(0,2,3)(0,3,4); hole dropped; 2-gon dropped; last triangle kept
    assert c.mesh.triangles.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4], [1, 2, 5]]


@pytest.mark.parametrize("orientation, scale, flipped", [
    ("rightHanded", (1, 1, 1), False), ("leftHanded", (1, 1, 1), True),
    ("rightHanded", (-1, 1, 1), False), ("leftHanded", (1, -1, 1), True),
])
def test_winding_follows_orientation_and_mirroring(tmp_path, orientation, scale, flipped):
    # A mirror in x or y maps the plane z = 0 onto itself and keeps which side faces +Z, so
    # the reader must re-wind the mirrored triangles to keep the same front.
    mesh = dict(sb.QUAD, orientation=orientation, scale=scale)
    c = read_stage(sb.make_stage(tmp_path / "s.usda", meshes={"/World/P": mesh}))
    a, b, cc = (c.mesh.positions[c.mesh.triangles[:, i]] for i in range(3))
    z = np.cross(b - a, cc - a)[:, 2]
    # the front is +Z when right-handed, -Z when left-handed
    assert (z < 0).all() if flipped else (z > 0).all()


QUAD_NORMALS = [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]


@pytest.mark.parametrize("interp, values, indices, as_primvar, expect", [
    ("constant", [(0, 0, 2)], None, True, lambda tri: [[0, 0, 1]] * 3),
    ("uniform", [(0, 1, 1)], None, False, lambda tri: [[0, 1, 1]] * 3),
    ("vertex", QUAD_NORMALS, None, False, lambda tri: [QUAD_NORMALS[v] for v in tri]),
    ("vertex", [(0, 0, 1), (1, 1, 1)], [0, 1, 0, 1], True, lambda tri: [[(0, 0, 1), (1, 1, 1)][v % 2] for v in tri]),
    ("faceVarying", QUAD_NORMALS[::-1], None, True, lambda tri: [QUAD_NORMALS[::-1][v] for v in tri]),
])
def test_normals_any_interpolation_transformed_by_inverse_transpose(tmp_path, interp, values, indices, as_primvar,
                                                                   expect):
    scale = np.array([2.0, 1.0, 0.5])
    mesh = dict(sb.QUAD, scale=tuple(scale), normals=(values, interp, indices, as_primvar))
    c = read_stage(sb.make_stage(tmp_path / "s.usda", meshes={"/World/P": mesh}))
    assert c.mesh.normals.shape == (2, 3, 3)
    # for the quad, corner index == vertex index, so faceVarying and vertex read alike
    for tri, got in zip(c.mesh.triangles, c.mesh.normals):
        n = np.array(expect(tri), dtype=float) / scale  # inverse transpose of diag(scale)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        assert np.allclose(got, n, atol=1e-6)


def test_primvar_normals_win_over_the_attribute(tmp_path):
    from pxr import Sdf, Usd, UsdGeom
    path = sb.make_stage(tmp_path / "s.usda", meshes={"/World/P": dict(sb.QUAD, normals=([(1, 0, 0)], "constant",
                                                                                         None, False))})
    stage = Usd.Stage.Open(str(path))
    UsdGeom.PrimvarsAPI(stage.GetPrimAtPath("/World/P")).CreatePrimvar(
        "normals", Sdf.ValueTypeNames.Normal3fArray, "constant").Set([(0, 0, 1)])
    stage.GetRootLayer().Save()
    assert np.allclose(read_stage(path).mesh.normals, [0, 0, 1])


@pytest.mark.parametrize("name", ["st", "UVMap", "myUVs"])
def test_uvs_indexed_primvar_by_name(tmp_path, name):
    uvs = [(0, 0), (1, 0), (1, 1), (0, 1)]
    mesh = dict(sb.QUAD, uvs=(name, uvs[::-1], "vertex", [3, 2, 1, 0]))
    c = read_stage(sb.make_stage(tmp_path / "s.usda", meshes={"/World/P": mesh}))
    assert np.allclose(c.mesh.uvs, np.array(uvs)[c.mesh.triangles])


def test_target_may_be_an_ancestor_with_one_mesh(tmp_path):
    path = sb.make_stage(tmp_path / "s.usda", meshes={"/World/Part/Geo": sb.QUAD, "/World/Other": sb.QUAD})
    assert read_stage(path, target="/World/Part").target == "/World/Part/Geo"
    with pytest.raises(InputError, match="holding 2 Meshes"):
        read_stage(path, target="/World")


def test_camera_uniform_scale_is_removed(tmp_path):
    path = sb.make_stage(tmp_path / "s.usda", cameras={"/World/Cam": dict(translate=(1, 2, 3), rotate_xyz=(10, 20, 30),
                                                                          scale=(2, 2, 2))})
    cam = read_stage(path).camera("/World/Cam")
    r = cam.world_from_camera[:3, :3]
    assert np.allclose(r, rotate_xyz(10, 20, 30)) and np.allclose(cam.world_from_camera[:3, 3], [1, 2, 3])


def test_omnipbr_material(tmp_path):
    inputs = {"diffuse_color_constant": (0.2, 0.4, 0.6), "metallic_constant": 1.0,
              "reflection_roughness_constant": 0.25, "specular_level": 0.3, "enable_clearcoat": True,
              "clearcoat_weight": 0.7, "clearcoat_reflection_roughness": 0.05}
    path = sb.make_stage(tmp_path / "s.usda", material=dict(kind="omnipbr", sub="OmniPBR_ClearCoat", inputs=inputs))
    c = read_stage(path)
    assert c.material_source == "/World/Looks/Mat/Shader (OmniPBR_ClearCoat)"
    m = c.material
    assert np.allclose(m["base_color"], [0.2, 0.4, 0.6]) and m["metallic"] == 1.0
    assert math.isclose(m["roughness"], 0.25) and math.isclose(m["specular_ior_level"], 0.3, rel_tol=1e-6)
    assert math.isclose(m["coat_weight"], 0.7, rel_tol=1e-6) and math.isclose(m["coat_roughness"], 0.05, rel_tol=1e-6)
    assert m["sheen_weight"] == 0.0  # unknown ones stay at Blender's defaults


def test_no_material_and_no_dome(tmp_path):
    c = read_stage(sb.make_stage(tmp_path / "s.usda"))
    assert c.material == {} and c.material_source == "" and c.dome is None


def test_time_samples_are_read_at_the_requested_time(tmp_path):
    from pxr import Usd, UsdGeom
    path = sb.make_stage(tmp_path / "s.usda")
    stage = Usd.Stage.Open(str(path))
    op = UsdGeom.Xformable(stage.GetPrimAtPath("/World/Part")).AddTranslateOp(opSuffix="anim")
    op.Set((0, 0, 0), 1.0)
    op.Set((0, 0, 10), 11.0)
    stage.GetRootLayer().Save()
    c = read_stage(path, time=6.0)
    assert c.time == 6.0 and np.allclose(c.mesh.positions[:, 2], 5.0)


def test_rereading_a_changed_file_sees_the_change(tmp_path):
    path = sb.make_stage(tmp_path / "s.usda")
    first = read_stage(path)  # keeps its stage, and so its layer, alive
    path.write_text(path.read_text().replace("(2, 0, 0), (2, 1, 0)", "(5, 0, 0), (5, 1, 0)"))
    assert read_stage(path).mesh.positions[:, 0].max() == 5.0
    assert first.mesh.positions[:, 0].max() == 2.0


def test_an_open_stage_is_read_as_it_is_in_memory(tmp_path):
    from pxr import Usd, UsdGeom
    path = sb.make_stage(tmp_path / "s.usda")
    stage = Usd.Stage.Open(str(path))
    UsdGeom.XformCommonAPI(stage.GetPrimAtPath("/World/Part")).SetTranslate((0, 0, 7))  # unsaved
    c = read_stage(stage)
    assert c.path == str(path) and np.allclose(c.mesh.positions[:, 2], 7.0)
