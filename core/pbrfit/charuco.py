"""Camera calibration from photos of a ChArUco board (OpenCV's aruco module): the camera's
intrinsics and lens distortion, and each photo's pose, written as USD cameras.

``pbrfit calibrate PHOTOS --board 7x5 --square 30mm --marker 22mm --out cameras.usda``

Conventions:

* The board: ``columns x rows`` chessboard squares of ``square`` side with ArUco markers of
  ``marker`` side from ``dictionary`` (OpenCV's names without ``DICT_``, e.g. ``5X5_100``),
  as ``cv2.aruco.CharucoBoard`` lays it out (the first marker in the top-left white square).
* The world is the board's frame turned so that +Z leaves the printed face (toward the
  cameras): +X along the board's columns, +Y opposite its rows, origin at the board's
  outer top-left corner; metres (``metersPerUnit`` 1), Z up. A part standing on the board
  is then in the same world as the cameras.
* Each photo becomes a ``UsdGeom.Camera`` ``/Cameras/<photo stem>`` (a valid prim name) with
  the pinhole intrinsics OpenCV found: a nominal horizontal aperture of :data:`APERTURE_MM`,
  the focal length and vertical aperture that give OpenCV's ``fx`` and ``fy``, and the
  principal point as aperture offsets (as :func:`pbrfit.gbuffer.camera_rays` reads them). USD
  cameras have no lens distortion, so the photos are written undistorted (same intrinsics,
  distortion removed) beside the stage, in ``<stage stem>_undistorted/``: those are the
  reference images a job should use with these cameras.

Why OpenCV: its ChArUco detector and ``calibrateCamera`` are the maintained reference
implementation; nothing here re-implements them.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dependencies import opencv
from .errors import InputError

__all__ = ["Board", "parse_board", "parse_length", "CameraCalibration", "calibrate", "write_cameras",
           "APERTURE_MM", "MIN_CORNERS", "MIN_PHOTOS", "PHOTO_SUFFIXES"]

#: the nominal horizontal aperture of the written cameras (mm); the focal length follows from it
APERTURE_MM = 36.0
#: a photo counts when at least this many ChArUco corners are found in it
MIN_CORNERS = 8
#: photos needed to solve for intrinsics and distortion
MIN_PHOTOS = 3
#: what is read from a photo folder
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass(frozen=True)
class Board:
    """A ChArUco board: squares per row and column, sizes in metres, the ArUco dictionary."""

    columns: int
    rows: int
    square_m: float
    marker_m: float
    dictionary: str = "5X5_100"

    def opencv(self):
        cv2 = opencv()
        name = f"DICT_{self.dictionary.upper()}"
        if not hasattr(cv2.aruco, name):
            known = ", ".join(n[5:] for n in dir(cv2.aruco) if n.startswith("DICT_") and not n.endswith("ORIGINAL"))
            raise InputError(f"--dictionary {self.dictionary}: not an ArUco dictionary; known: {known}")
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
        if (self.columns * self.rows) // 2 > d.bytesList.shape[0]:
            raise InputError(f"--dictionary {self.dictionary} has {d.bytesList.shape[0]} markers, fewer than a "
                             f"{self.columns}x{self.rows} board needs; use a larger one")
        return cv2.aruco.CharucoBoard((self.columns, self.rows), self.square_m, self.marker_m, d)


def parse_board(text: str) -> tuple[int, int]:
    """``"7x5"`` -> (7, 5): squares per row, per column."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 3 or int(m.group(2)) < 3:
        raise InputError(f"--board {text}: give the squares as COLUMNSxROWS, each at least 3, e.g. --board 7x5")
    return int(m.group(1)), int(m.group(2))


def parse_length(text: str, option: str) -> float:
    """``"30mm"``, ``"3cm"``, ``"0.03m"`` or ``"1.5in"`` -> metres."""
    units = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254}
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(mm|cm|m|in)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"{option} {text}: give a length with its unit, e.g. {option} 30mm (mm, cm, m or in)")
    return float(m.group(1)) * units[m.group(2)]


@dataclass
class CameraCalibration:
    """What :func:`calibrate` found.

    Attributes:
        size: (width, height) of the photos in pixels.
        matrix: (3, 3) OpenCV camera matrix (pixels; pixel centres at integer coordinates).
        distortion: OpenCV distortion coefficients (k1, k2, p1, p2, k3).
        poses: per used photo, its (4, 4) world_from_camera in USD's camera convention (looks
            down -Z, +Y up) and world frame (module docstring), metres.
        errors: per used photo, its RMS reprojection error (pixels).
        rms: the overall RMS reprojection error (pixels).
        skipped: {photo: why} for photos not used.
        corners: per used photo, the ChArUco corners found.
    """

    size: tuple[int, int]
    matrix: np.ndarray
    distortion: np.ndarray
    poses: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    rms: float = math.nan
    skipped: dict = field(default_factory=dict)
    corners: dict = field(default_factory=dict)


#: OpenCV camera (x right, y down, looking down +z) -> USD camera (looks down -z, +y up), and the
#: board's frame (z into the printed face) -> the world (z out of it): both diag(1, -1, -1)
_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def _gray8(path: Path) -> np.ndarray:
    """A photo as 8-bit grey, as encoded (OpenCV detects on display-encoded values)."""
    cv2 = opencv()
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise InputError(f"{path}: not a photo OpenCV can read (JPEG, PNG or TIFF)")
    if image.dtype == np.uint16:
        return (image // 257).astype(np.uint8)
    if image.dtype != np.uint8:
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return image


_CORNER_BIAS: list = []


def corner_bias() -> float:
    """How far (pixels, along x and y alike) this OpenCV's ``CharucoDetector`` places corners
    from where they are, in OpenCV's own convention (pixel centres at integer coordinates):
    0.5 in OpenCV up to 4.12 (opencv/opencv#25539: a half-pixel shift around ``cornerSubPix``,
    fixed by opencv/opencv#28380 in January 2026), 0 after. A property of the OpenCV build, not
    of the user's board: measured once per process on a fixed board warped by a known homography
    with OpenCV's own warpPerspective; if that detection fails, the version decides."""
    if _CORNER_BIAS:
        return _CORNER_BIAS[0]
    cv2 = opencv()
    cv_board = Board(7, 5, 0.03, 0.022).opencv()
    detector = cv2.aruco.CharucoDetector(cv_board)
    px, square = 60, cv_board.getSquareLength()
    image = cv_board.generateImage((7 * px, 5 * px), marginSize=0)
    k = px / square  # board metres -> photo pixels; board image pixel centre u <-> (u + 0.5) / px squares
    h_board = np.array([[2.0 * k, 0.15 * k, 40.3], [-0.1 * k, 1.9 * k, 30.7], [0.02 / square, 0.05 / square, 1.0]])
    to_metres = np.array([[1 / k, 0, 0.5 / k], [0, 1 / k, 0.5 / k], [0, 0, 1]])
    warped = cv2.warpPerspective(image, h_board @ to_metres, (int(2.4 * 7 * px) + 80, int(2.4 * 5 * px) + 60),
                                 flags=cv2.INTER_CUBIC, borderValue=255)
    cc, ci, _, _ = detector.detectBoard(warped)
    if ci is not None and len(ci) >= 12:
        obj, img = cv_board.matchImagePoints(cc, ci)
        obj = obj.reshape(-1, 3)[:, :2]
        proj = (h_board @ np.c_[obj, np.ones(len(obj))].T).T
        offset = float((img.reshape(-1, 2) - proj[:, :2] / proj[:, 2:]).mean())
        if abs(offset - 0.5) < 0.15 or abs(offset) < 0.15:
            _CORNER_BIAS.append(0.5 if abs(offset - 0.5) < 0.15 else 0.0)
            return _CORNER_BIAS[0]
    major, minor = (int(x) for x in cv2.__version__.split(".")[:2])
    return 0.5 if (major, minor) <= (4, 12) else 0.0


def calibrate(photos: list[Path], board: Board, check=None, k3: bool = False) -> CameraCalibration:
    """Detect the board in ``photos`` and solve for the camera (one camera, fixed lens).

    Args:
        check: called before each photo (it raises to cancel).
        k3: also fit the sixth-order radial term (wide-angle lenses); by default it stays 0:
            with a few photos it otherwise absorbs noise and bends the undistorted corners.

    Raises:
        InputError: fewer than :data:`MIN_PHOTOS` photos show :data:`MIN_CORNERS` corners (the
            message names each photo that failed and why), photos of different sizes.
    """
    cv2 = opencv()
    cv_board = board.opencv()
    detector = cv2.aruco.CharucoDetector(cv_board)
    bias = corner_bias()
    obj_points, img_points, used, skipped, corners = [], [], [], {}, {}
    size = None
    for path in photos:
        if check is not None:
            check()
        try:
            gray = _gray8(path)
        except InputError as e:
            skipped[path.name] = f"unreadable ({e})"
            continue
        if size is None:
            size = (gray.shape[1], gray.shape[0])
        elif (gray.shape[1], gray.shape[0]) != size:
            raise InputError(f"{path}: {gray.shape[1]}x{gray.shape[0]} pixels, the other photos {size[0]}x{size[1]}; "
                             "calibrate one camera (one image size) at a time")
        cc, ci, _, mi = detector.detectBoard(gray)
        found = 0 if ci is None else len(ci)
        if found < MIN_CORNERS:
            markers = 0 if mi is None else len(mi)
            skipped[path.name] = (f"{found} ChArUco corners found ({markers} markers), fewer than {MIN_CORNERS}: "
                                  "is the whole board in view and sharp, and are --board and --dictionary right?")
            continue
        obj, img = cv_board.matchImagePoints(cc, ci)
        obj_points.append(obj.astype(np.float32))
        img_points.append((img - bias).astype(np.float32))
        used.append(path)
        corners[path.name] = found
    if len(used) < MIN_PHOTOS:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no photos"
        raise InputError(f"the board was found in {len(used)} of {len(photos)} photos, fewer than the {MIN_PHOTOS} "
                         f"calibration needs ({why})")
    flags = 0 if k3 else cv2.CALIB_FIX_K3
    rms, matrix, dist, rvecs, tvecs = cv2.calibrateCamera(obj_points, img_points, size, None, None, flags=flags)
    result = CameraCalibration(size, matrix, dist.ravel()[:5], rms=float(rms), skipped=skipped, corners=corners)
    for path, obj, img, r, t in zip(used, obj_points, img_points, rvecs, tvecs):
        projected, _ = cv2.projectPoints(obj, r, t, matrix, dist)
        result.errors[path.name] = float(np.sqrt(((projected.reshape(-1, 2) - img.reshape(-1, 2)) ** 2)
                                                 .sum(-1).mean()))
        cam_from_board = np.eye(4)
        cam_from_board[:3, :3], cam_from_board[:3, 3] = cv2.Rodrigues(r)[0], t.ravel()
        # world = FLIP board; usd camera = FLIP cv camera
        result.poses[path.name] = _FLIP @ np.linalg.inv(cam_from_board) @ _FLIP
    return result


def usd_intrinsics(matrix: np.ndarray, size: tuple[int, int]) -> dict:
    """UsdGeom.Camera attributes (mm) of an OpenCV camera matrix for ``size`` (w, h) pixels."""
    w, h = size
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    focal = fx * APERTURE_MM / w
    return {"focalLength": focal, "horizontalAperture": APERTURE_MM, "verticalAperture": h * focal / fy,
            "horizontalApertureOffset": (w / 2 - 0.5 - cx) * focal / fx,
            "verticalApertureOffset": (cy + 0.5 - h / 2) * focal / fy}


def _prim_name(stem: str, taken: set) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if not name or name[0].isdigit():
        name = "Photo_" + name
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def write_cameras(result: CameraCalibration, photos: list[Path], out: Path) -> dict:
    """Write ``out`` (a USD stage of the cameras), ``<stem>_undistorted/`` (each used photo,
    undistorted, same format) and ``<stem>.json`` (the calibration and its errors), each
    atomically; returns what the JSON holds."""
    from pxr import Gf, Sdf, Usd, UsdGeom

    from .atomic import atomic_write_text

    cv2 = opencv()
    out = Path(out)
    folder = out.parent / f"{out.stem}_undistorted"
    layer = Sdf.Layer.CreateAnonymous(".usda")
    stage = Usd.Stage.Open(layer)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Scope.Define(stage, "/Cameras")
    stage.SetDefaultPrim(root.GetPrim())
    intrinsics = usd_intrinsics(result.matrix, result.size)
    taken: set = set()
    cameras = {}
    staging = folder.parent / f".{folder.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in photos:
        if path.name not in result.poses:
            continue
        name = _prim_name(path.stem, taken)
        cam = UsdGeom.Camera.Define(stage, f"/Cameras/{name}")
        cam.AddTransformOp().Set(Gf.Matrix4d(result.poses[path.name].T.tolist()))
        for attr, value in intrinsics.items():
            cam.GetPrim().GetAttribute(attr).Set(float(value))
        cam.CreateClippingRangeAttr(Gf.Vec2f(0.01, 1000.0))
        cam.GetPrim().SetCustomDataByKey("pbrfit:photo", str(path))
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise InputError(f"{path}: OpenCV cannot read it to undistort it; convert it to PNG or TIFF")
        cv2.imwrite(str(staging / path.name), cv2.undistort(image, result.matrix, result.distortion))
        cameras[name] = {"photo": str(path), "undistorted": str(folder / path.name),
                         "reprojection_error_px": result.errors[path.name], "corners": result.corners[path.name]}
    doc = {"format": "pbrfit.cameras/1", "stage": str(out), "image_size": list(result.size),
           "camera_matrix": result.matrix.tolist(), "distortion": [float(v) for v in result.distortion],
           "rms_reprojection_error_px": result.rms, "cameras": cameras, "skipped": result.skipped}
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    atomic_write_text(out, layer.ExportToString())
    atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")
    return doc
