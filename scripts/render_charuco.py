"""Synthetic ChArUco photos rendered by Blender/Cycles from known cameras: the fixture of
``pbrfit calibrate``'s tests and benchmark.

The board (OpenCV's ``CharucoBoard`` image) is an emitting plane in the world frame
:mod:`pbrfit.charuco` calibrates into: printed face up (+Z), +X along the board's columns,
board rows along -Y, its outer top-left corner at the origin. Each camera looks at a point on
the board from a given direction; Cycles renders 8-bit sRGB PNGs (view transform Standard).

Usage::

    python scripts/render_charuco.py OUT [--board 7x5 --square 30 --marker 22 --dictionary 5X5_100]
        [--size 800x600] [--lens 35] [--shift-x 0.0] [--cameras 8]

Writes ``OUT/photos/camN.png`` and ``OUT/truth.json``: the board, image size, the OpenCV camera
matrix implied by the lens (``fx = lens / 36 mm * width``, principal point from the shift) and
each camera's world_from_camera (USD convention: looks down -Z, +Y up).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _cameras(count: int, centre, distance: float) -> list[tuple]:
    """(location, target) pairs around the board: tilts 15-45 degrees from its normal, every azimuth."""
    out = []
    for k in range(count):
        az = 2 * math.pi * k / count + 0.3
        tilt = math.radians(15 + 30 * (k % 3) / 2)
        d = distance * (0.9 + 0.1 * (k % 2))
        loc = (centre[0] + d * math.sin(tilt) * math.cos(az), centre[1] + d * math.sin(tilt) * math.sin(az),
               d * math.cos(tilt))
        target = (centre[0] + 0.01 * math.cos(3 * k), centre[1] + 0.01 * math.sin(3 * k), 0.0)
        out.append((loc, target))
    return out


def render(out: Path, columns=7, rows=5, square_mm=30.0, marker_mm=22.0, dictionary="5X5_100",
           size=(800, 600), lens=35.0, shift_x=0.0, count=8, samples=16) -> dict:
    import bpy
    import cv2
    import numpy as np
    from mathutils import Vector

    out.mkdir(parents=True, exist_ok=True)
    (out / "photos").mkdir(exist_ok=True)
    sq, mk = square_mm / 1000.0, marker_mm / 1000.0
    board = cv2.aruco.CharucoBoard((columns, rows), sq, mk,
                                   cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, f"DICT_{dictionary}")))
    px_per_square = 120
    image = board.generateImage((columns * px_per_square, rows * px_per_square), marginSize=0)
    cv2.imwrite(str(out / "board.png"), image)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    width, height = columns * sq, rows * sq
    mesh = bpy.data.meshes.new("Board")
    mesh.from_pydata([(0, -height, 0), (width, -height, 0), (width, 0, 0), (0, 0, 0)], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new()
    for loop, coord in zip(mesh.loops, [(0, 0), (1, 0), (1, 1), (0, 1)]):
        uv.data[loop.index].uv = coord
    obj = bpy.data.objects.new("Board", mesh)
    sc.collection.objects.link(obj)
    mat = bpy.data.materials.new("Board")
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(str(out / "board.png"))
    tex.interpolation = "Cubic"
    emit = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], output.inputs["Surface"])
    mesh.materials.append(mat)
    world = bpy.data.worlds.new("World")
    world.color = (0.0, 0.0, 0.0)
    sc.world = world

    sc.render.engine = "CYCLES"
    sc.cycles.device = "CPU"
    sc.cycles.samples = samples
    sc.cycles.use_denoising = False
    sc.cycles.use_adaptive_sampling = False
    sc.cycles.seed = 0
    sc.render.resolution_x, sc.render.resolution_y = size
    sc.render.resolution_percentage = 100
    sc.view_settings.view_transform = "Standard"
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGB"
    sc.render.image_settings.color_depth = "8"

    w, h = size
    fx = lens / 36.0 * w
    cameras = {}
    for k, (loc, target) in enumerate(_cameras(count, (width / 2, -height / 2), 0.36)):
        data = bpy.data.cameras.new(f"cam{k}")
        data.lens, data.sensor_width, data.sensor_fit = lens, 36.0, "HORIZONTAL"
        data.shift_x = shift_x
        cam = bpy.data.objects.new(f"cam{k}", data)
        sc.collection.objects.link(cam)
        cam.location = loc
        cam.rotation_euler = (Vector(target) - Vector(loc)).to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        sc.camera = cam
        sc.render.filepath = str(out / "photos" / f"cam{k}.png")
        bpy.ops.render.render(write_still=True)
        cameras[f"cam{k}.png"] = np.array(cam.matrix_world).tolist()
    truth = {"board": {"columns": columns, "rows": rows, "square_mm": square_mm, "marker_mm": marker_mm,
                       "dictionary": dictionary},
             "image_size": [w, h],
             # Blender's shift moves the image window by shift x the larger side: the principal point the other way
             "camera_matrix": [[fx, 0.0, (w - 1) / 2 - shift_x * max(w, h)], [0.0, fx, (h - 1) / 2], [0, 0, 1]],
             "world_from_camera": cameras}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--board", default="7x5")
    p.add_argument("--square", type=float, default=30.0, help="mm")
    p.add_argument("--marker", type=float, default=22.0, help="mm")
    p.add_argument("--dictionary", default="5X5_100")
    p.add_argument("--size", default="800x600")
    p.add_argument("--lens", type=float, default=35.0, help="mm, on a 36 mm sensor width")
    p.add_argument("--shift-x", type=float, default=0.0)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--samples", type=int, default=16)
    a = p.parse_args(argv)
    cols, rows = (int(v) for v in a.board.lower().split("x"))
    w, h = (int(v) for v in a.size.lower().split("x"))
    render(a.out, cols, rows, a.square, a.marker, a.dictionary, (w, h), a.lens, a.shift_x, a.cameras, a.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
