"""pbrfit calibrate: camera intrinsics and poses from ChArUco board photos rendered by Cycles
from known cameras (scripts/render_charuco.py), written as USD cameras pbrfit reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PBRFIT = [sys.executable, "-m", "pbrfit.cli", "calibrate"]
BOARD = ["--board", "7x5", "--square", "30mm", "--marker", "22mm"]


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    out = tmp_path_factory.mktemp("charuco")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_charuco.py"), str(out), "--shift-x", "0.02",
                        "--cameras", "6"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def calibrated(boards):
    out = boards / "calib" / "cameras.usda"
    out.parent.mkdir()
    r = subprocess.run([*PBRFIT, str(boards / "photos"), *BOARD, "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "calibrated 6 of 6 photos" in r.stdout
    return out


def _camera(stage_path: Path, name: str):
    from pxr import Usd

    from pbrfit.usd_stage import _read_camera

    stage = Usd.Stage.Open(str(stage_path))
    return _read_camera(stage.GetPrimAtPath(f"/Cameras/{name}"), Usd.TimeCode.Default(), stage_path)


def test_intrinsics_and_poses_are_those_of_the_cameras_that_took_the_photos(boards, calibrated):
    truth = json.loads((boards / "truth.json").read_text())
    doc = json.loads(calibrated.with_suffix(".json").read_text())
    k, k_true = np.array(doc["camera_matrix"]), np.array(truth["camera_matrix"])
    assert abs(k[0, 0] / k_true[0, 0] - 1) < 0.005 and abs(k[1, 1] / k_true[1, 1] - 1) < 0.005
    assert abs(k[0, 2] - k_true[0, 2]) < 2.0 and abs(k[1, 2] - k_true[1, 2]) < 2.0  # (the shift's sign, too)
    assert doc["rms_reprojection_error_px"] < 0.2
    for photo, m in truth["world_from_camera"].items():
        cam = _camera(calibrated, Path(photo).stem)
        found, true = cam.world_from_camera, np.array(m)
        r = found[:3, :3].T @ true[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
        assert angle < 0.1, (photo, angle)
        assert np.linalg.norm(found[:3, 3] - true[:3, 3]) < 0.002, photo  # metres; the cameras are ~0.35 m away


def test_pbrfit_sees_the_board_through_the_written_camera_where_the_undistorted_photo_shows_it(boards, calibrated):
    """A board corner, projected through the USD camera as pbrfit's ray generation reads it,
    lands on the corner OpenCV detects in the undistorted photo (its half-pixel bias up to 4.12
    taken off, as pbrfit calibrate does: charuco.corner_bias)."""
    import cv2
    import torch

    from pbrfit.charuco import Board, corner_bias
    from pbrfit.silhouette import project

    board = Board(7, 5, 0.03, 0.022).opencv()
    detector = cv2.aruco.CharucoDetector(board)
    photo = calibrated.parent / "cameras_undistorted" / "cam1.png"
    corners, ids, _, _ = detector.detectBoard(cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    corners = corners - corner_bias()
    assert ids is not None and len(ids) > 10
    cam = _camera(calibrated, "cam1")
    h, w = cv2.imread(str(photo)).shape[:2]
    world = board.getChessboardCorners()[ids.ravel()] * [1, -1, -1]  # the board's frame -> the world (module doc)
    zero = torch.zeros(3, dtype=torch.float64)
    ji = project(world, cam, (h, w), zero, zero, zero[0]).numpy()  # pbrfit's pinhole (gbuffer.camera_rays')
    err = np.hypot(ji[:, 0] - corners[:, 0, 0], ji[:, 1] - corners[:, 0, 1])
    assert err.max() < 0.5, err


def test_opencvs_half_pixel_corner_bias_is_measured_and_taken_off():
    """opencv/opencv#25539: CharucoDetector (4.12 and before) puts corners half a pixel right of and
    below where they are; measured on a board OpenCV itself warps, not assumed by version."""
    import cv2

    from pbrfit.charuco import corner_bias

    bias = corner_bias()
    major, minor = (int(x) for x in cv2.__version__.split(".")[:2])
    assert bias in (0.0, 0.5)
    if (major, minor) <= (4, 12):  # the fix was merged in January 2026, after 4.12
        assert bias == 0.5


def test_too_few_photos_showing_the_board_is_refused_naming_each_and_nothing_is_written(boards, tmp_path):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(boards / "photos" / "cam0.png", folder)
    shutil.copy(boards / "photos" / "cam1.png", folder)
    cv2.imwrite(str(folder / "blank.png"), np.full((600, 800), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "cameras.usda"
    r = subprocess.run([*PBRFIT, str(folder), *BOARD, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "found in 2 of 4 photos, fewer than the 3" in line
    assert "blank.png: 0 ChArUco corners found" in line and "broken.jpg: unreadable" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


@pytest.mark.parametrize("args, message", [
    (["--board", "7", "--square", "30mm", "--marker", "22mm"], "--board 7: give the squares as COLUMNSxROWS"),
    (["--board", "7x5", "--square", "30", "--marker", "22mm"], "--square 30: give a length with its unit"),
    (["--board", "7x5", "--square", "30mm", "--marker", "3cm"], "--marker 3cm must be smaller than --square 30mm"),
    ([*BOARD, "--dictionary", "9X9_5"], "--dictionary 9X9_5: not an ArUco dictionary"),
])
def test_bad_options_are_refused_in_one_line(boards, tmp_path, args, message):
    r = subprocess.run([*PBRFIT, str(boards / "photos"), *args, "--out", str(tmp_path / "c.usda")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "c.usda").exists()


REAL = Path(__file__).parent / "data" / "real_photos" / "charuco"


def test_real_photos_of_a_printed_board_give_opencvs_own_calibration_of_them():
    """Four camera JPEGs of a printed 5x7 board (OpenCV's tutorial shots, Apache 2.0; see
    tests/data/real_photos/README.md): every photo is used, with the reprojection error and the
    intrinsics OpenCV's tutorial calibration reports for the same photos (fx 452.5, fy 456.8,
    principal point (317.7, 277.8), RMS 0.18 px). Four photos pin the focal length to ~2%,
    where it trades against the radial distortion."""
    from pbrfit.charuco import Board, calibrate

    photos = sorted(REAL.glob("img_*.jpg"))
    assert len(photos) == 4
    result = calibrate(photos, Board(5, 7, 0.04, 0.02, "6X6_250"), k3=True)
    assert not result.skipped and len(result.poses) == 4
    assert all(n >= 20 for n in result.corners.values()), result.corners
    assert result.rms < 0.25
    fx, fy, cx, cy = result.matrix[0, 0], result.matrix[1, 1], result.matrix[0, 2], result.matrix[1, 2]
    assert fx == pytest.approx(452.51, rel=0.025) and fy == pytest.approx(456.77, rel=0.025)
    assert abs(cx - 317.70) < 3 and abs(cy - 277.75) < 3
    # the board faces each camera from 25-60 cm away (a hand-held tutorial shot)
    for pose in result.poses.values():
        assert 0.2 < np.linalg.norm(np.asarray(pose)[:3, 3]) < 0.8
