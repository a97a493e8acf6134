"""The Blender add-on (blender_addon/pbrfit_blender) against the real PyPI bpy module.

bpy is process-global, so every test runs its Blender work in a fresh subprocess
(``_blender``) that imports tests/fixtures/blender_addon_scene.py, builds a small scene and
prints one JSON line. Scenes are tiny (a 24x12 UV sphere, 32-48 px cameras, a bundled
Blender HDRI); Cycles runs with 16 samples.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PY = sys.executable

_PRELUDE = f"""
import json, math, sys
sys.path.insert(0, {str(FIXTURES)!r})
import numpy as np
import bpy
import blender_addon_scene as S
import pytest

pytestmark = pytest.mark.cycles  # renders with real Cycles / runs the bpy module
def out(**kw):
    print("RESULT=" + json.dumps(kw), flush=True)
"""


def _blender(code: str, timeout: float = 300) -> dict:
    """Run ``code`` (after the prelude) in a fresh Python with bpy; return what it ``out()``s."""
    proc = subprocess.run([PY, "-c", _PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")]
    assert proc.returncode == 0 and lines, \
        f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT="):])


def test_socket_table_covers_every_parameter_and_names_real_sockets():
    sys.path.insert(0, str(ROOT / "blender_addon"))
    from pbrfit.params import PARAMETER_NAMES
    from pbrfit_blender.sockets import SOCKETS  # no bpy needed

    assert tuple(SOCKETS) == PARAMETER_NAMES
    r = _blender("""
        mat = bpy.data.materials.new("M")
        node = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
        addon = S.register()
        from pbrfit_blender.sockets import SOCKETS
        registered = hasattr(bpy.types.Scene, "pbrfit") and hasattr(bpy.types, "PBRFIT_PT_sidebar")
        addon.unregister()
        gone = not hasattr(bpy.types.Scene, "pbrfit") and not hasattr(bpy.types, "PBRFIT_PT_sidebar")
        addon.register()
        out(missing=[s for s in SOCKETS.values() if s not in node.inputs], registered=registered, gone=gone,
            again=hasattr(bpy.types.Scene, "pbrfit"))
    """)
    assert r["missing"] == []
    assert r["registered"] and r["gone"] and r["again"]  # register / unregister / register


def test_extract_scene():
    r = _blender("""
        part, cams = S.build({"base_color": [0.6, 0.3, 0.2], "roughness": 0.25, "metallic": 0.5},
                             mapping_rotation=(0, 0, 30), strength=2.0, cameras=((0, -6, 0), (6, 0, 0)))
        part.location = (1.0, 2.0, 3.0)
        part.scale = (2.0, 2.0, 2.0)
        img = bpy.data.images.new("photo", 32, 32, alpha=True, float_buffer=True)
        px = np.zeros((32, 32, 4), np.float32); px[..., :3] = 0.25; px[8:24, 8:24, 3] = 1.0
        px[..., :3] *= px[..., 3:]
        img.pixels.foreach_set(px.ravel())
        S.set_background(cams[0], img)
        vv = bpy.context.scene.pbrfit.validation_views
        entry = vv.add()
        entry.camera, entry.image = cams[1], img
        entry.hdri = bpy.data.images.load(S.hdri_path("city"))
        vv.add().camera = cams[1]  # incomplete: skipped
        from pbrfit_blender.extract import extract_scene
        ex = extract_scene(bpy.context, part)
        sc, v = ex.scene, ex.scene.views[0]
        val = ex.scene.views[1]
        m = sc.mesh
        out(val=dict(name=val.name, split=val.split, source=val.environment.source,
                     same_rot=bool(np.allclose(val.environment.world_from_dome, v.environment.world_from_dome)),
                     scale=val.environment.scale.tolist(),
                     cam=bool(np.allclose(val.camera.world_from_camera[:3, 3], [6, 0, 0]))),
            skipped=ex.skipped, n_views=len(sc.views), name=v.name, tris=m.triangles.shape[0],
            n_faces=len(part.data.polygons), centre=m.positions.mean(0).tolist(),
            radius=float(np.linalg.norm(m.positions - [1, 2, 3], axis=1).max()),
            normal_len=float(np.abs(np.linalg.norm(m.normals, axis=2) - 1).max()),
            outward=float((np.einsum("fcj,fcj->fc", m.normals, m.positions[m.triangles] - [1, 2, 3])).min()),
            uvs=list(m.uvs.shape), cam=v.camera.world_from_camera.tolist(),
            fov=2 * math.atan(v.camera.horizontal_aperture / (2 * v.camera.focal_length)),
            rot=v.environment.world_from_dome.tolist(), scale=v.environment.scale.tolist(),
            env_shape=list(v.environment.image.shape), image=float(v.image[16, 16, 0]),
            mask_sum=float(v.mask.sum()), mask_top=float(v.mask[8, 8]), split=v.split,
            initial=sc.initial_material, up=sc.up_axis, target=sc.target)
    """)
    assert r["n_views"] == 2 and r["name"] == "Cam0" and r["split"] == "train"
    assert r["skipped"] == ["camera 'Cam1' has no enabled background image (the photograph); skipped",
                            "validation view 2 needs a camera, an image and an HDRI; skipped"]
    # the validation view: its own HDRI, the World's orientation and strength
    assert r["val"]["name"] == "Cam1@city.exr" and r["val"]["split"] == "validate" and r["val"]["cam"]
    assert r["val"]["source"].endswith("city.exr") and r["val"]["same_rot"] and r["val"]["scale"] == [2.0] * 3
    # the triangulate modifier was applied through the depsgraph, the object transform too
    assert r["tris"] == 24 * 10 * 2 + 2 * 24 and r["n_faces"] < r["tris"]
    np.testing.assert_allclose(r["centre"], [1, 2, 3], atol=1e-6)
    assert abs(r["radius"] - 2.0) < 1e-5
    assert r["normal_len"] < 1e-6 and r["outward"] > 0  # smooth normals point outward
    assert r["uvs"] == [r["tris"], 3, 2]
    cam = np.array(r["cam"])
    np.testing.assert_allclose(cam[:3, 3], [0, -6, 0], atol=1e-6)
    np.testing.assert_allclose(cam[:3, :3] @ [0, 0, -1], [0, 1, 0], atol=1e-6)  # looks down -Z at the part
    np.testing.assert_allclose(cam[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-6)  # +Y up
    assert abs(r["fov"] - 2 * math.atan(36 / 100)) < 1e-6  # 50 mm lens, 36 mm sensor
    # Mapping rotation Z 30 deg: world_from_dome = Rz(30)^T @ rotateXYZ(90, 0, 90)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rz_t = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    base = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])  # dome +Y -> +Z, dome +Z (centre) -> +X
    np.testing.assert_allclose(r["rot"], rz_t @ base, atol=1e-6)
    assert r["scale"] == [2.0, 2.0, 2.0] and r["env_shape"] == [512, 1024, 3]
    assert abs(r["image"] - 0.25) < 1e-6  # float pixels read as linear
    assert r["mask_sum"] == 16 * 16 and r["mask_top"] == 1.0  # row 0 at the top: rows 8..23 covered
    np.testing.assert_allclose(r["initial"]["base_color"], [0.6, 0.3, 0.2], atol=1e-6)
    assert abs(r["initial"]["metallic"] - 0.5) < 1e-6 and abs(r["initial"]["roughness"] - 0.25) < 1e-6
    assert r["up"] == "Z" and r["target"] == "Part"


def test_no_camera_with_background_image_is_an_error():
    r = _blender("""
        part, cams = S.build()
        from pbrfit.errors import InputError
        from pbrfit_blender.extract import extract_scene
        try:
            extract_scene(bpy.context, part)
        except InputError as e:
            out(error=str(e))
        try:
            bpy.ops.pbrfit.fit(synchronous=True)
        except RuntimeError as e:
            out(error=str(e).splitlines()[0], panel=bpy.context.scene.pbrfit.error)
    """)
    assert "no camera has a background image" in r["error"]
    assert "Background Images" in r["panel"]


def test_object_without_principled_bsdf_is_an_error():
    r = _blender("""
        part, cams = S.build()
        S.set_background(cams[0], bpy.data.images.new("photo", 32, 32))
        from pbrfit.errors import InputError
        from pbrfit_blender.extract import extract_scene
        mat = part.active_material
        nt = mat.node_tree
        principled = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
        nt.nodes.remove(principled)
        diffuse = nt.nodes.new("ShaderNodeBsdfDiffuse")
        nt.links.new(diffuse.outputs[0], nt.nodes["Material Output"].inputs["Surface"])
        errors = []
        try:
            extract_scene(bpy.context, part)
        except InputError as e:
            errors.append(str(e))
        part.data.materials.clear()
        try:
            extract_scene(bpy.context, part)
        except InputError as e:
            errors.append(str(e))
        out(errors=errors)
    """)
    assert len(r["errors"]) == 2
    assert "material 'Mat' on object 'Part' has no Principled BSDF" in r["errors"][0]
    assert "object 'Part' has no material" in r["errors"][1]


def test_writeback_restore_and_shared_material():
    r = _blender("""
        part, cams = S.build({"base_color": [0.1, 0.2, 0.3], "roughness": 0.4})
        from pbrfit.errors import InputError
        from pbrfit_blender.extract import find_principled, read_principled
        from pbrfit_blender.writeback import PREVIOUS_KEY, apply_material
        # one undo step: Ctrl+Z (ed.undo) puts the old values back
        bpy.ops.ed.undo_push(message="before")
        apply_material(part, {"roughness": 0.8})
        written = read_principled(find_principled(bpy.data.objects["Part"].active_material))["roughness"]
        bpy.ops.ed.undo()
        part = bpy.data.objects["Part"]  # undo reloads the data: fetch it again
        undone = read_principled(find_principled(part.active_material))["roughness"]
        node = find_principled(part.active_material)
        apply_material(part, {"base_color": [0.9, 0.5, 0.1], "roughness": 0.7, "coat_weight": 0.3})
        after = read_principled(node)
        sockets = {"Base Color": list(node.inputs["Base Color"].default_value),
                   "Roughness": node.inputs["Roughness"].default_value,
                   "Coat Weight": node.inputs["Coat Weight"].default_value}
        stored = json.loads(part.active_material[PREVIOUS_KEY])
        bpy.ops.pbrfit.restore_previous(object_name="Part")
        restored = read_principled(node)
        # a second object sharing the material
        other = bpy.data.objects.new("Other", part.data.copy())
        bpy.context.scene.collection.objects.link(other)
        other.data.materials[0] = part.active_material
        errors = []
        try:
            apply_material(part, {"roughness": 0.9})
        except InputError as e:
            errors.append(str(e))
        unchanged = read_principled(node)["roughness"]
        new = apply_material(part, {"roughness": 0.9}, copy_if_shared=True)
        out(written=written, undone=undone,
            after=after, sockets=sockets, stored=stored, restored=restored, errors=errors,
            unchanged=unchanged, new=new.name, part_mat=part.active_material.name,
            other_mat=other.active_material.name,
            other_rough=read_principled(find_principled(other.active_material))["roughness"],
            copy_rough=read_principled(find_principled(new))["roughness"])
    """)
    assert abs(r["written"] - 0.8) < 1e-6 and abs(r["undone"] - 0.4) < 1e-6
    np.testing.assert_allclose(r["after"]["base_color"], [0.9, 0.5, 0.1], atol=1e-6)
    np.testing.assert_allclose(r["sockets"]["Base Color"], [0.9, 0.5, 0.1, 1.0], atol=1e-6)  # RGBA socket
    assert abs(r["sockets"]["Roughness"] - 0.7) < 1e-6 and abs(r["sockets"]["Coat Weight"] - 0.3) < 1e-6
    np.testing.assert_allclose(r["stored"]["values"]["base_color"], [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(r["restored"]["base_color"], [0.1, 0.2, 0.3], atol=1e-6)
    assert abs(r["restored"]["roughness"] - 0.4) < 1e-6 and r["restored"]["coat_weight"] == 0.0
    assert len(r["errors"]) == 1 and "also used by Other" in r["errors"][0] and "Make a copy" in r["errors"][0]
    assert abs(r["unchanged"] - 0.4) < 1e-6
    assert r["part_mat"] == r["new"] != r["other_mat"] == "Mat"
    assert abs(r["other_rough"] - 0.4) < 1e-6 and abs(r["copy_rough"] - 0.9) < 1e-6


def test_writeback_switches_the_node_to_what_pbrfit_models_and_restore_switches_back():
    """A user's Principled BSDF on GGX with Random Walk (Skin): the fitted values are written
    under Multiscatter GGX and Random Walk (what pbrfit renders), each switch is reported, and
    Restore Previous puts the user's settings back. Without subsurface the method is left."""
    r = _blender("""
        part, cams = S.build({"base_color": [0.5, 0.5, 0.5], "roughness": 0.4})
        from pbrfit_blender.extract import find_principled
        from pbrfit_blender.writeback import apply_material, restore_previous
        node = find_principled(part.active_material)
        node.distribution, node.subsurface_method = "GGX", "RANDOM_WALK_SKIN"
        plain = []
        apply_material(part, {"roughness": 0.3}, notes=plain)
        after_plain = [node.distribution, node.subsurface_method]
        restore_previous(part)
        restored_plain = [node.distribution, node.subsurface_method]
        wax = []
        apply_material(part, {"subsurface_weight": 1.0, "subsurface_scale": 0.1}, notes=wax)
        after_wax = [node.distribution, node.subsurface_method]
        restore_previous(part)
        out(plain=plain, after_plain=after_plain, restored_plain=restored_plain, wax=wax, after_wax=after_wax,
            restored=[node.distribution, node.subsurface_method],
            weight=node.inputs["Subsurface Weight"].default_value)
    """)
    assert r["after_plain"] == ["MULTI_GGX", "RANDOM_WALK_SKIN"] and len(r["plain"]) == 1
    assert "Distribution set from GGX to Multiscatter GGX" in r["plain"][0]
    assert r["restored_plain"] == ["GGX", "RANDOM_WALK_SKIN"]
    assert r["after_wax"] == ["MULTI_GGX", "RANDOM_WALK"] and len(r["wax"]) == 2
    assert "Subsurface Method set from Random Walk (Skin) to Random Walk" in r["wax"][1]
    assert r["restored"] == ["GGX", "RANDOM_WALK_SKIN"] and r["weight"] == 0.0


def test_texture_maps_write_back_render_in_cycles_and_restore(tmp_path):
    """Fitted maps become Image Texture nodes on the mesh's UV map: a map red in its top half
    and blue in its bottom half renders red above and blue below the sphere's equator in
    Cycles (UV v = 1 at the top pole = the image's top row); restore removes the nodes and a
    second restore brings them back; a socket fed by the user's own node is refused before
    anything changes; saved maps land in the folder as EXR."""
    r = _blender(f"""
        from pbrfit.texture_fit import MapResult
        from pbrfit.errors import InputError
        part, cams = S.build({{"base_color": [0.5, 0.5, 0.5], "roughness": 0.5}}, cameras=((0, -6, 0),),
                             resolution=(40, 40))
        from pbrfit_blender.extract import find_principled
        from pbrfit_blender.writeback import apply_material, restore_previous
        tex = np.zeros((16, 16, 3), np.float32); tex[:8] = [0.8, 0.05, 0.05]; tex[8:] = [0.05, 0.05, 0.8]
        rough = np.full((16, 16, 1), 0.3, np.float32)
        seen = np.ones((16, 16), bool)
        maps = {{"base_color": MapResult("base_color", tex, seen, seen.astype(np.float32), "UVMap"),
                 "roughness": MapResult("roughness", rough, seen, seen.astype(np.float32), "UVMap")}}
        mat = apply_material(part, {{"base_color": [0.4, 0.05, 0.4], "roughness": 0.3}}, maps=maps)
        node = find_principled(mat)
        linked = {{s: node.inputs[s].links[0].from_node.name for s in ("Base Color", "Roughness")
                   if node.inputs[s].is_linked}}
        img = node.inputs["Base Color"].links[0].from_node.image
        px = np.array(img.pixels[:], np.float32).reshape(img.size[1], img.size[0], 4)
        uv_map = mat.node_tree.nodes["pbrfit uv"].uv_map
        path = S.render(cams[0], {str(tmp_path / "maps.exr")!r})
        restore_previous(part)
        after_restore = {{s: node.inputs[s].is_linked for s in ("Base Color", "Roughness")}}
        restore_previous(part)
        after_redo = {{s: node.inputs[s].is_linked for s in ("Base Color", "Roughness")}}
        # the user's own texture into Metallic: a metallic map is refused, nothing changes
        user = mat.node_tree.nodes.new("ShaderNodeTexNoise")
        mat.node_tree.links.new(user.outputs["Fac"], node.inputs["Metallic"])
        errors = []
        try:
            apply_material(part, {{"metallic": 0.5}}, maps={{"metallic": MapResult("metallic", rough, seen,
                                                                               seen.astype(np.float32))}})
        except InputError as e:
            errors.append(str(e))
        still = node.inputs["Metallic"].links[0].from_node.name
        apply_material(part, {{"roughness": 0.3}}, maps={{"roughness": maps["roughness"]}},
                       texture_folder={str(tmp_path / "maps")!r})
        saved = node.inputs["Roughness"].links[0].from_node.image
        from pbrfit_blender.pipeline import check_texture_folder
        import os
        blocked = {str(tmp_path / "ro")!r}
        os.makedirs(blocked); os.chmod(blocked, 0o500)
        folder_errors = []
        for folder in ("//maps", blocked + "/sub"):
            try:
                check_texture_folder(folder)
            except InputError as e:
                folder_errors.append(str(e))
        out(folder_errors=folder_errors, linked=linked, colorspace=img.colorspace_settings.name,
            packed=img.packed_file is not None,
            bottom=px[0, 0, :3].tolist(), top=px[-1, 0, :3].tolist(), uv=uv_map,
            after_restore=after_restore, after_redo=after_redo, errors=errors, still=still,
            saved=bpy.path.abspath(saved.filepath), saved_cs=saved.colorspace_settings.name,
            nodes=sorted(n.name for n in mat.node_tree.nodes if n.name.startswith("pbrfit")))
    """)
    assert r["linked"] == {"Base Color": "pbrfit map base_color", "Roughness": "pbrfit map roughness"}
    assert r["colorspace"] == "Linear Rec.709" and r["packed"] and r["uv"] == "UVMap"
    np.testing.assert_allclose(r["bottom"], [0.05, 0.05, 0.8], atol=1e-3)  # Blender's row 0 is the bottom
    np.testing.assert_allclose(r["top"], [0.8, 0.05, 0.05], atol=1e-3)
    assert r["after_restore"] == {"Base Color": False, "Roughness": False}
    assert r["after_redo"] == {"Base Color": True, "Roughness": True}
    assert len(r["errors"]) == 1 and "Metallic is linked to node 'Noise Texture'" in r["errors"][0]
    assert r["still"] == "Noise Texture"
    assert Path(r["saved"]).is_file() and Path(r["saved"]).suffix == ".exr" and r["saved_cs"] == "Non-Color"
    assert r["nodes"] == ["pbrfit map roughness", "pbrfit uv"]
    assert "not saved yet" in r["folder_errors"][0]
    if os.geteuid() != 0:  # root may write anywhere
        assert len(r["folder_errors"]) == 2 and "cannot be written" in r["folder_errors"][1]
    from pbrfit.images import read_image

    img, alpha = read_image(tmp_path / "maps.exr")
    h = img.shape[0]
    upper = img[: h // 2][alpha[: h // 2] > 0.99].mean(0)
    lower = img[h // 2:][alpha[h // 2:] > 0.99].mean(0)
    assert upper[0] > 2 * upper[2] and lower[2] > 2 * lower[0], (upper, lower)


def test_a_normal_map_written_back_renders_in_cycles_as_pbrfit_renders_it(tmp_path):
    """A bumpy tangent-space normal map (a height field's, slopes up to ~0.4) written back by
    the add-on (Image Texture -> Normal Map node on the UV map) and rendered by Cycles agrees
    with pbrfit's raster render of the same map (MikkTSpace-style tangents, Cycles' Normal Map
    node) about as well as two renders of a flat material do, and far better than the flat
    material does."""
    r = _blender(f"""
        import torch
        from pbrfit.texture_fit import MapResult
        part, cams = S.build({{"base_color": [0.6, 0.6, 0.6], "roughness": 0.25}}, cameras=((0, -6, 1.0),),
                             resolution=(48, 48), segments=64, rings=32)
        from pbrfit_blender.writeback import apply_material
        from pbrfit_blender.extract import extract_scene, find_principled, read_principled
        from pbrfit.params import ParameterSpace, normalize_material
        from pbrfit.render import RasterRenderer, SampleCounts
        res, k, amp = 128, 6, 0.01
        v, u = np.mgrid[0:res, 0:res]
        uu, vv = (u + 0.5) / res, 1 - (v + 0.5) / res
        hu = amp * 2 * math.pi * k * np.cos(2 * math.pi * k * uu) * np.sin(2 * math.pi * k * vv)
        hv = amp * 2 * math.pi * k * np.sin(2 * math.pi * k * uu) * np.cos(2 * math.pi * k * vv)
        n = np.stack([-hu, -hv, np.ones_like(hu)], -1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        enc = ((n + 1) / 2).astype(np.float32)
        seen = np.ones((res, res), bool)
        mat = apply_material(part, {{}}, maps={{"normal": MapResult("normal", enc, seen, seen.astype(np.float32),
                                                                  "UVMap")}})
        node = find_principled(mat)
        decode = node.inputs["Normal"].links[0].from_node
        path = S.render(cams[0], {str(tmp_path / "cycles.exr")!r}, samples=128)
        S.set_background(cams[0], bpy.data.images.load(path))
        scene = extract_scene(bpy.context, part).scene
        space = ParameterSpace(normalize_material(read_principled(node)), [])
        m = space.material(space.initial_vector())
        raster = RasterRenderer(scene, SampleCounts(64, 16, 32, 16))
        ref = scene.views[0].image
        cover = scene.views[0].mask > 0.99
        def err(img):
            return float(np.abs(img[cover] - ref[cover]).mean() / ref[cover].mean())
        out(mapped=err(raster.render_image(0, dict(m, normal=torch.as_tensor(enc)))),
            flat=err(raster.render_image(0, m)), decode=[decode.bl_idname, decode.space, decode.uv_map],
            colorspace=decode.inputs["Color"].links[0].from_node.image.colorspace_settings.name)
    """)
    assert r["decode"] == ["ShaderNodeNormalMap", "TANGENT", "UVMap"] and r["colorspace"] == "Non-Color"
    print(f"relative error against Cycles: normal map {r['mapped']:.3f}, flat {r['flat']:.3f}")
    assert r["mapped"] < 0.1 and r["mapped"] < 0.6 * r["flat"], r


def test_cancel_leaves_material_unchanged():
    r = _blender("""
        import threading
        part, cams = S.build({"base_color": [0.1, 0.2, 0.3], "roughness": 0.4})
        img = bpy.data.images.new("photo", 32, 32, float_buffer=True)
        px = np.full((32, 32, 4), 0.5, np.float32); px[..., 3] = 1.0
        img.pixels.foreach_set(px.ravel())
        S.set_background(cams[0], img)
        from pbrfit.errors import FitCancelled
        from pbrfit_blender.extract import find_principled, read_principled
        from pbrfit_blender.pipeline import fit_object, fit_options, prepare
        from pbrfit.session import FitSession
        before = read_principled(find_principled(part.active_material))
        options = fit_options(None, parameters=["base_color", "roughness"], iterations=50)
        cancel = threading.Event(); cancel.set()
        kinds = []
        try:
            fit_object(bpy.context, part, options, cancel=cancel)
        except FitCancelled as e:
            kinds.append("sync: " + str(e))
        # the modal operator's way: the engine's session, cancelled after the first progress report
        session = FitSession(prepare(bpy.context, part).scene, options).start()
        import time
        seen = []
        while not session.finished:
            if session.poll() and not session.cancel_requested:
                seen.append("progress")
                session.cancel()
            time.sleep(0.01)
        seen.append(session.state)
        after = read_principled(find_principled(part.active_material))
        settings = bpy.context.scene.pbrfit
        backends = [fit_options(settings).backend]
        settings.backend = "raster"
        backends.append(fit_options(settings).backend)
        out(kinds=kinds, seen=seen, same=before == after, keys=list(part.active_material.keys()),
            images=[i.name for i in bpy.data.images], backends=backends)
    """)
    assert r["backends"] == ["auto", "raster"]  # the panel's Renderer reaches the fit
    assert r["kinds"] == ["sync: fit cancelled; nothing was written"]
    assert r["seen"][0] == "progress" and r["seen"][-1] == "cancelled" and "done" not in r["seen"]
    assert r["same"] and "pbrfit_previous" not in r["keys"]
    assert not any(n.startswith("pbrfit ") for n in r["images"])


def test_missing_dependency_is_reported_not_raised():
    r = _blender("""
        sys.modules["torch"] = None  # import torch now fails, as in a Blender without the wheels
        pbrfit_blender = S.register()
        from pbrfit_blender.deps import dependency_message
        msg = dependency_message(refresh=True)
        try:
            bpy.ops.pbrfit.fit(synchronous=True)
            op = None
        except RuntimeError as e:
            op = str(e)
        out(msg=msg, op=op, panel=bpy.context.scene.pbrfit.error)
    """)
    assert r["msg"].startswith("pbrfit needs torch")
    assert "pbrfit needs torch" in r["op"] and "Traceback" not in r["op"]
    assert r["panel"] == r["msg"]


def test_blend_and_usd_export_give_the_same_scene(tmp_path):
    blend = tmp_path / "scene.blend"
    _blender(f"""
        part, cams = S.build(resolution=(48, 32), mapping_rotation=(10, 20, 30),
                             cameras=((0.5, -6.0, 1.5), (5.0, 2.0, -1.0)))
        cams[0].data.shift_x, cams[0].data.shift_y = 0.1, -0.05
        cams[1].data.lens = 35.0
        part.location = (0.2, 0.1, 0.3); part.rotation_euler = (0.3, 0.2, 0.1); part.scale = (1.2, 1.2, 1.2)
        img = bpy.data.images.new("bg", 48, 32)
        for c in cams:
            S.set_background(c, img)
        bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
        out(ok=True)
    """)
    r = _blender(f"""
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        S.register()
        from pbrfit_blender.extract import extract_scene
        ex = extract_scene(bpy.context, bpy.data.objects["Part"]).scene
        bpy.ops.object.select_all(action="SELECT")
        bpy.ops.wm.usd_export(filepath={str(tmp_path / "scene.usda")!r}, convert_world_material=True,
                              selected_objects_only=False, export_materials=False)
        from pbrfit.usd_stage import read_stage
        st = read_stage({str(tmp_path / "scene.usda")!r}, target="/root/Part")
        cams = {{}}
        for v in ex.views:
            c = next(c for p, c in st.cameras.items() if p.startswith("/root/" + v.name + "/"))
            cams[v.name] = dict(
                blend=v.camera.world_from_camera.tolist(), usd=c.world_from_camera.tolist(),
                blend_k=[getattr(v.camera, k) / v.camera.focal_length for k in
                         ("horizontal_aperture", "vertical_aperture", "horizontal_aperture_offset",
                          "vertical_aperture_offset")],
                usd_k=[getattr(c, k) / c.focal_length for k in
                       ("horizontal_aperture", "vertical_aperture", "horizontal_aperture_offset",
                        "vertical_aperture_offset")],
                blend_clip=list(v.camera.clipping_range), usd_clip=list(c.clipping_range))
        out(points=float(np.abs(st.mesh.positions - ex.mesh.positions).max()),
            same_tris=bool((st.mesh.triangles == ex.mesh.triangles).all()),
            normals=float(np.abs(st.mesh.normals - ex.mesh.normals).max()),
            world=float(np.abs(st.mesh.world_from_object - ex.mesh.world_from_object).max()),
            cams=cams, dome_usd=st.dome.world_from_dome.tolist(),
            dome_blend=ex.views[0].environment.world_from_dome.tolist())
    """)
    assert r["points"] < 1e-5 and r["same_tris"] and r["normals"] < 1e-5 and r["world"] < 1e-5
    assert set(r["cams"]) == {"Cam0", "Cam1"}
    for c in r["cams"].values():
        np.testing.assert_allclose(c["blend"], c["usd"], atol=1e-5)
        np.testing.assert_allclose(c["blend_k"], c["usd_k"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(c["blend_clip"], c["usd_clip"], rtol=1e-6)
    assert r["cams"]["Cam0"]["blend_k"][2] > 0 > r["cams"]["Cam0"]["blend_k"][3]  # the shift is there
    np.testing.assert_allclose(r["dome_blend"], r["dome_usd"], atol=1e-5)


def test_fit_end_to_end_with_cycles(tmp_path):
    """Cycles renders the truth, the script fits base colour + roughness, Cycles renders the
    fit back. Tolerances are loose: 16 samples at 32 px, 12 iterations. The mean absolute
    difference over the covered pixels, relative to the reference's mean, must be below 0.2
    and at most 60 % of what the initial material gives; the base colour within 0.15."""
    blend, fitted, out = tmp_path / "scene.blend", tmp_path / "fitted.blend", tmp_path / "out"
    truth = {"base_color": [0.7, 0.25, 0.1], "roughness": 0.35}
    _blender(f"""
        part, cams = S.build({truth!r}, cameras=((0, -6, 1.5), (5, 3, 0.5)))
        for i, c in enumerate(cams):
            path = S.render(c, {str(tmp_path)!r} + f"/ref{{i}}.exr")
            S.set_background(c, bpy.data.images.load(path))
        S.add_camera("Spare", (0, 6, 0))  # no background image: skipped with a warning
        from pbrfit_blender.writeback import set_principled
        from pbrfit_blender.extract import find_principled
        set_principled(find_principled(part.active_material), {{"base_color": [0.5, 0.5, 0.5], "roughness": 0.6}})
        S.render(cams[0], {str(tmp_path / "initial.exr")!r})
        bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
        out(ok=True)
    """)
    proc = subprocess.run([PY, str(ROOT / "scripts" / "blender_fit.py"), str(blend), "--object", "Part",
                           "--parameters", "base_color,roughness", "--iterations", "12",
                           "--save", str(fitted), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ΔE2000 train" in proc.stdout
    doc = json.loads((out / "material.json").read_text())
    assert doc["format"] == "pbrfit.material/1" and doc["fitted"] == ["base_color", "roughness"]
    assert (out / "report.html").is_file() and not list(tmp_path.glob(".*.tmp.blend"))
    r = _blender(f"""
        bpy.ops.wm.open_mainfile(filepath={str(fitted)!r})
        S.register()
        from pbrfit_blender.extract import find_principled, read_principled
        part = bpy.data.objects["Part"]
        values = read_principled(find_principled(part.active_material))
        S.render(bpy.data.objects["Cam0"], {str(tmp_path / "back.exr")!r})
        out(values=values, previous=json.loads(part.active_material["pbrfit_previous"]),
            images=sorted(i.name for i in bpy.data.images if i.name.startswith("pbrfit ")))
    """)
    from pbrfit.images import read_image

    ref, alpha = read_image(tmp_path / "ref0.exr")
    back, _ = read_image(tmp_path / "back.exr")
    initial, _ = read_image(tmp_path / "initial.exr")
    m = alpha > 0.99
    err = float(np.abs(back[m] - ref[m]).mean() / ref[m].mean())
    err0 = float(np.abs(initial[m] - ref[m]).mean() / ref[m].mean())
    print(f"relative error: fit {err:.3f}, initial {err0:.3f}; base colour {r['values']['base_color']}")
    assert err < 0.2 and err < 0.6 * err0, (err, err0)
    np.testing.assert_allclose(r["values"]["base_color"], truth["base_color"], atol=0.15)
    np.testing.assert_allclose(doc["parameters"]["base_color"], r["values"]["base_color"], atol=1e-6)
    np.testing.assert_allclose(r["previous"]["values"]["base_color"], [0.5, 0.5, 0.5], atol=1e-6)
    assert r["images"] == ["pbrfit figure Cam0", "pbrfit figure Cam1", "pbrfit heatmap Cam0",
                           "pbrfit heatmap Cam1"]


def test_manifest_and_extension_zip(tmp_path):
    import tomllib
    import zipfile

    manifest = tomllib.loads((ROOT / "blender_addon" / "pbrfit_blender" / "blender_manifest.toml").read_text())
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min", "license", "permissions"):
        assert key in manifest, key
    assert manifest["id"] == "pbrfit" and manifest["type"] == "add-on" and manifest["blender_version_min"] == "4.2.0"
    assert "files" in manifest["permissions"]
    proc = subprocess.run([PY, str(ROOT / "scripts" / "build_blender_extension.py"), "--no-wheels",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (zip_path,) = tmp_path.glob("pbrfit-*.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        built = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert {"blender_manifest.toml", "__init__.py", "extract.py", "writeback.py", "operators.py",
            "panels.py", "properties.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert built["id"] == "pbrfit" and "wheels" not in built


def test_panel_draws_real_properties_and_operators():
    """The panel body is drawn into a recording layout (no window exists headless): every
    property it shows exists on the settings, every operator it offers is registered, and
    after a (simulated) fit state the progress bar and result rows are drawn."""
    r = _blender("""
        part, cams = S.build()
        from pbrfit_blender.panels import draw_pbrfit
        calls = []

        class Layout:
            def __getattr__(self, name):
                def record(*args, **kw):
                    calls.append((name, args, kw))
                    return Layout()
                return record

        settings = bpy.context.scene.pbrfit
        settings.preset = "CUSTOM"
        from pbrfit.fit import Progress
        from pbrfit.progress import describe
        settings.running, settings.progress = True, 0.5
        settings.progress_text = describe(Progress(13, 26, "gloss", 0.1, 2.5, None, 4.0, remaining=4.0))
        item = settings.result_images.add()
        item.view, item.split, item.kind, item.image = "Cam0", "train", "heatmap", bpy.data.images.new("h", 4, 4)
        # what a fit of a half-metallic sheen material leaves for the panel
        from types import SimpleNamespace
        from pbrfit.fit import FitOptions
        from pbrfit.params import default_material
        from pbrfit_blender.pipeline import publish_findings
        fitted = dict(default_material(), metallic=0.5, sheen_weight=0.8)
        publish_findings(bpy.context, SimpleNamespace(material=fitted, fitted=["metallic", "sheen_weight"],
                                                      notes=[{"about": "time budget", "severity": "warning",
                                                              "message": "the run took longer"}]), FitOptions())
        findings = [(f.kind, f.severity, f.subject) for f in settings.findings]
        draw_pbrfit(Layout(), bpy.context)
        props = [(a[0], a[1]) for n, a, kw in calls if n == "prop"]
        missing = [p for o, p in props if p not in {x.identifier for x in o.bl_rna.properties}]
        ops = [a[0] for n, a, kw in calls if n == "operator"]
        unknown_ops = [o for o in ops
                       if not hasattr(getattr(bpy.types, "PBRFIT_OT_" + o.split(".")[1], None), "bl_idname")]
        out(n_props=len(props), missing=missing, ops=ops, unknown_ops=unknown_ops, findings=findings,
            progress=[kw for n, a, kw in calls if n == "progress"],
            labels=[kw.get("text", "") for n, a, kw in calls if n == "label"])
    """)
    assert r["missing"] == [] and r["n_props"] > 20  # preset, budget and every parameter toggle
    assert set(r["ops"]) == {"pbrfit.fit", "pbrfit.cancel", "pbrfit.restore_previous", "pbrfit.validation_add",
                             "pbrfit.validation_remove"} and r["unknown_ops"] == []
    assert r["progress"] and r["progress"][0]["factor"] == 0.5
    assert r["progress"][0]["text"] == "gloss 13/26, loss 0.1, ΔE2000 train 2.50, 4 s, ~4 s left"
    assert any("Cam0 (train)" in t for t in r["labels"])
    # plausibility findings, the run's notes and export losses reach the panel
    assert ["finding", "warning", "metallic"] in r["findings"]
    assert ["finding", "warning", "time budget"] in r["findings"]
    assert any(k == "export" and s == "UsdPreviewSurface" for k, _, s in r["findings"])
    assert any(t.startswith("metallic: ") for t in r["labels"]) and any("sheen" in t for t in r["labels"])


def test_world_setup_errors():
    r = _blender("""
        part, cams = S.build()
        S.set_background(cams[0], bpy.data.images.new("photo", 32, 32))
        from pbrfit.errors import InputError
        from pbrfit_blender.extract import extract_scene
        errors = []
        def attempt():
            try:
                extract_scene(bpy.context, part)
                errors.append(None)
            except InputError as e:
                errors.append(str(e))
        nt = bpy.context.scene.world.node_tree
        mapping = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeMapping")
        mapping.inputs["Location"].default_value = (0.0, 0.0, 1.0)
        attempt()
        mapping.inputs["Location"].default_value = (0.0, 0.0, 0.0)
        mapping.inputs["Scale"].default_value = (2.0, 2.0, 2.0)
        attempt()  # a uniform scale does not change directions: fine
        env = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeTexEnvironment")
        nt.nodes.remove(env)
        attempt()
        bpy.context.scene.world = None
        attempt()
        out(errors=errors)
    """)
    e = r["errors"]
    assert "has a Location" in e[0] and e[1] is None
    assert "must come from an Environment Texture" in e[2] and "no World" in e[3]


def test_camera_intrinsics_match_blenders_projection():
    """Oracle: Blender's own projection matrix (Object.calc_matrix_camera) for every sensor
    fit, landscape and portrait frames, non-square pixels and lens shift. For a USD pinhole,
    P[0][0] = 2 f / hap, P[1][1] = 2 f / vap, P[0][2] = 2 hoff / hap, P[1][2] = 2 voff / vap."""
    r = _blender("""
        part, cams = S.build()
        from pbrfit_blender.extract import extract_camera
        cam = cams[0]
        cam.data.sensor_width, cam.data.sensor_height, cam.data.lens = 36.0, 20.0, 42.0
        cam.data.shift_x, cam.data.shift_y = 0.12, -0.07
        render = bpy.context.scene.render
        rows = []
        for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
            for res in ((48, 32), (32, 48)):
                for aspect in ((1.0, 1.0), (2.0, 1.0)):
                    cam.data.sensor_fit = fit
                    render.resolution_x, render.resolution_y = res
                    render.pixel_aspect_x, render.pixel_aspect_y = aspect
                    dg = bpy.context.evaluated_depsgraph_get()
                    P = cam.calc_matrix_camera(dg, x=res[0], y=res[1], scale_x=aspect[0], scale_y=aspect[1])
                    c = extract_camera(cam, render)
                    rows.append(dict(case=[fit, res, aspect],
                        ours=[2 * c.focal_length / c.horizontal_aperture, 2 * c.focal_length / c.vertical_aperture,
                              2 * c.horizontal_aperture_offset / c.horizontal_aperture,
                              2 * c.vertical_aperture_offset / c.vertical_aperture],
                        blender=[P[0][0], P[1][1], P[0][2], P[1][2]]))
        out(rows=rows)
    """)
    assert len(r["rows"]) == 12
    for row in r["rows"]:
        np.testing.assert_allclose(row["ours"], row["blender"], rtol=1e-5, atol=1e-6, err_msg=str(row["case"]))


def test_photo_from_file_and_packed_agree(tmp_path):
    """An sRGB PNG with straight alpha reads the same from its file (pbrfit.images) and,
    once packed into the .blend, from Image.pixels: linear, premultiplied, row 0 at the top."""
    from pbrfit.images import write_png

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0      # top rows transparent
    rgba[4:, :, 3] = 255
    write_png(tmp_path / "photo.png", rgba)
    r = _blender(f"""
        part, cams = S.build()
        from pbrfit_blender.extract import image_pixels
        img = bpy.data.images.load({str(tmp_path / "photo.png")!r})
        rgb_file, a_file = image_pixels(img, "test")
        img.pack()
        img.filepath = "//missing.png"
        rgb_packed, a_packed = image_pixels(img, "test")
        out(file=rgb_file.tolist(), packed=rgb_packed.tolist(), a_file=a_file.tolist(), a_packed=a_packed.tolist())
    """)
    from pbrfit.images import srgb_to_linear

    expected = srgb_to_linear(rgba[..., :3] / 255.0) * (rgba[..., 3:] / 255.0)
    np.testing.assert_allclose(r["file"], expected, atol=1e-4)
    np.testing.assert_allclose(r["packed"], expected, atol=2e-3)
    np.testing.assert_allclose(r["a_packed"], rgba[..., 3] / 255.0, atol=1e-6)
    assert np.asarray(r["a_file"])[:4].max() == 0 and np.asarray(r["a_file"])[4:].min() == 1


def test_blenders_usd_importer_reads_the_written_back_maps(tmp_path):
    """The maps pbrfit writes back onto a USD stage (UsdUVTexture + primvar reader into the
    UsdPreviewSurface; the normal map with scale 2 / bias -1) come into Blender through its
    own USD importer as Image Texture nodes on the UV map, the normal map through a Normal Map
    node."""
    r = _blender(f"""
        from pathlib import Path
        from pxr import Usd
        import synthetic
        from pbrfit.texture_fit import MapResult
        from pbrfit.writeback_usd import write_back
        folder = Path({str(tmp_path)!r})
        synthetic.write_stage(folder, uvs=True)
        stage = Usd.Stage.Open(str(folder / "scene.usda"))
        seen = np.ones((8, 8), bool)
        tex = np.zeros((8, 8, 3), np.float32); tex[:4] = [0.8, 0.1, 0.1]; tex[4:] = [0.1, 0.1, 0.8]
        bumps = np.zeros((8, 8, 3), np.float32); bumps[:] = [0.6, 0.5, 0.95]
        write_back(stage, "/World/Part", {{"base_color": [0.45, 0.1, 0.45], "roughness": 0.4}},
                   maps={{"base_color": MapResult("base_color", tex, seen, seen.astype(float)),
                          "normal": MapResult("normal", bumps, seen, seen.astype(float))}},
                   edit_layer=str(folder / "scene.usda"))
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.wm.usd_import(filepath=str(folder / "scene.usda"))
        mat = bpy.data.objects["Part"].active_material
        principled = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
        base = principled.inputs["Base Color"].links[0].from_node
        normal = principled.inputs["Normal"].links[0].from_node
        normal_tex = normal.inputs["Color"].links[0].from_node
        out(base=[base.bl_idname, Path(base.image.filepath).name, base.inputs["Vector"].links[0].from_node.bl_idname],
            normal=[normal.bl_idname, normal.space, Path(normal_tex.image.filepath).name],
            pixels=list(base.image.size))
    """)
    assert r["base"] == ["ShaderNodeTexImage", "pbrfit_Part_base_color.exr", "ShaderNodeUVMap"]
    assert r["normal"] == ["ShaderNodeNormalMap", "TANGENT", "pbrfit_Part_normal.exr"]
    assert r["pixels"] == [8, 8]


def test_lamps_read_from_the_scene_equal_blenders_usd_export(tmp_path):
    """The add-on's lamps (extract_lights) against the same lamps through Blender's USD
    exporter and pbrfit.lights.read_lights, the route rendered against Cycles in
    test_lights_vs_cycles: the same kind, radiance, place, axes and size; a lamp with no power is
    refused by name. Every lamp has a colour temperature (Blender's ``temperature_color`` on one
    side, UsdLux's blackbody on the other: they agree to 0.5%), because Blender 5.0's exporter
    marks every lamp ``enableColorTemperature`` whether its temperature is used or not."""
    r = _blender(f"""
        part, cams = S.build(resolution=(48, 32))
        from mathutils import Vector
        specs = [("SUN", 3.0, (4, -3, 3), dict(angle=math.radians(10))),
                 ("POINT", 400.0, (2.5, -2.5, 2.0), dict(shadow_soft_size=0.3)),
                 ("POINT", 50.0, (0.0, -3.0, 1.0), dict(shadow_soft_size=0.0)),
                 ("AREA", 300.0, (-2.5, -2.0, 1.5), dict(shape="RECTANGLE", size=1.5, size_y=0.8)),
                 ("AREA", 200.0, (0.5, -3.0, -1.5), dict(shape="DISK", size=1.2)),
                 ("SPOT", 500.0, (3.0, -3.0, 1.0), dict(shadow_soft_size=0.1, spot_size=math.radians(40),
                                                        spot_blend=0.25))]
        for i, (kind, energy, loc, extra) in enumerate(specs):
            data = bpy.data.lights.new(f"L{{i}}", kind)
            data.energy = energy
            data.color = (1.0, 0.8, 0.6)
            data.use_temperature = True
            data.temperature = (6500.0, 4000.0, 2700.0, 3200.0, 5000.0, 8000.0)[i]
            for k, v in extra.items():
                setattr(data, k, v)
            o = bpy.data.objects.new(f"L{{i}}", data)
            bpy.context.scene.collection.objects.link(o)
            o.location = loc
            o.rotation_euler = (-Vector(loc)).to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        from pbrfit_blender.extract import extract_lights
        mine = {{light.prim_path: light for light in extract_lights(bpy.context.scene)}}
        bpy.ops.object.select_all(action="SELECT")
        bpy.ops.wm.usd_export(filepath={str(tmp_path / "lamps.usda")!r}, selected_objects_only=False,
                              export_materials=False, export_lights=True)
        from pxr import Usd
        from pbrfit.lights import read_lights
        theirs = {{light.prim_path.split("/")[2]: light for light in
                  read_lights(Usd.Stage.Open({str(tmp_path / "lamps.usda")!r}))}}
        pairs = {{name: [[mine[name].kind, theirs[name].kind], [mine[name].radiance, theirs[name].radiance],
                        [mine[name].position, theirs[name].position], [mine[name].axes, theirs[name].axes],
                        [mine[name].size, theirs[name].size], [mine[name].cone, theirs[name].cone]]
                 for name in mine}}
        bpy.data.lights["L1"].energy = 0.0
        try:
            extract_lights(bpy.context.scene)
            refused = ""
        except Exception as e:
            refused = str(e)
        out(pairs=pairs, names=sorted(theirs), refused=refused)
    """)
    assert sorted(r["pairs"]) == r["names"] == ["L0", "L1", "L2", "L3", "L4", "L5"]
    for name, (kinds, radiance, position, axes, size, cone) in r["pairs"].items():
        assert kinds[0] == kinds[1], name
        np.testing.assert_allclose(radiance[0], radiance[1], rtol=5e-3, err_msg=name)
        np.testing.assert_allclose(position[0], position[1], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(axes[0], axes[1], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(size[0], size[1], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(cone[0], cone[1], rtol=1e-5, err_msg=name)
    assert [r["pairs"][n][0][0] for n in ("L0", "L1", "L2", "L3", "L4", "L5")] == [
        "distant", "sphere", "point", "rect", "disk", "sphere"]
    np.testing.assert_allclose(r["pairs"]["L5"][5][0], [math.radians(20), 0.25], rtol=1e-5)
    warm = np.asarray(r["pairs"]["L2"][1][0]) / np.asarray(r["pairs"]["L0"][1][0])  # 2700 K against 6500 K
    assert warm[0] > warm[2] * 3  # the temperature is applied, not only the same on both sides
    assert "lamp 'L1'" in r["refused"] and "positive power" in r["refused"]
