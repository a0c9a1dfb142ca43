"""Captures: .npz and OpenPose JSON reading, alignment to a calibration, and the errors bad
input gets."""

import json
from pathlib import Path

import numpy as np
import pytest

from mjx_biomech.capture.cameras import Camera, CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError

NAMES = ("nose", "left_hip", "right_hip")
DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose2sim-demo" / "keypoints_blazepose.npz"


def make_rig(names=("cam01", "cam02", "cam03")):
    cams = [
        Camera(n, (640, 480), 500.0, 500.0, 320.0, 240.0, np.zeros(5), [0.0, 0.1 * i, 0.0], [0.0, 0.0, 3.0])
        for i, n in enumerate(names)
    ]
    return CameraRig.from_cameras(cams, source="calib_test.toml")


def make_capture(C=3, T=5, J=3, seed=0):
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 400, size=(C, T, J, 2))
    conf = rng.uniform(0.5, 1.0, size=(C, T, J))
    return Capture(kp, conf, 30.0, NAMES[:J], [f"cam{c + 1:02d}" for c in range(C)], name="trial")


def test_nan_keypoints_get_zero_confidence_and_zero_confidence_keypoints_become_nan():
    kp = np.ones((2, 3, 3, 2))
    conf = np.full((2, 3, 3), 0.9)
    kp[0, 1, 2, 0] = np.nan
    conf[1, 0, 1] = 0.0
    conf[1, 2, 0] = np.nan
    cap = Capture(kp, conf, 60.0, NAMES, ["a", "b"])
    assert cap.confidence[0, 1, 2] == 0.0 and np.all(np.isnan(cap.keypoints[0, 1, 2]))
    assert np.all(np.isnan(cap.keypoints[1, 0, 1])) and cap.confidence[1, 2, 0] == 0.0
    assert np.count_nonzero(cap.confidence == 0) == 3
    assert np.count_nonzero(np.isnan(cap.keypoints[..., 0])) == 3


def test_npz_round_trip_and_times(tmp_path):
    cap = make_capture()
    path = cap.to_npz(tmp_path / "walk.npz")
    back = Capture.from_npz(path)
    np.testing.assert_array_equal(back.keypoints, cap.keypoints)
    np.testing.assert_array_equal(back.confidence, cap.confidence)
    assert back.camera_names == cap.camera_names and back.keypoint_names == cap.keypoint_names
    assert back.fps == 30.0 and back.name == "walk" and back.num_frames == 5
    np.testing.assert_allclose(back.times, [0, 1 / 30, 2 / 30, 3 / 30, 4 / 30])


def test_npz_missing_array_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, keypoints=np.zeros((1, 2, 3, 2)), confidence=np.zeros((1, 2, 3)), fps=30.0, camera_names=np.array(["a"]))
    with pytest.raises(InputError, match=r"bad\.npz: missing array 'keypoint_names'"):
        Capture.from_npz(path)
    np.savez(path, keypoints=np.zeros((1, 2, 3, 2)), confidence=np.zeros((1, 3, 3)), fps=30.0,
             camera_names=np.array(["a"]), keypoint_names=np.array(NAMES))
    with pytest.raises(InputError, match=r"bad\.npz: confidence: expected shape \(1, 2, 3\)"):
        Capture.from_npz(path)


@pytest.mark.parametrize("field, value", [("fps", np.nan), ("fps", -30.0), ("start_time", np.inf)])
def test_npz_non_finite_frame_rate_or_start_time_is_named(tmp_path, field, value):
    path = tmp_path / "bad.npz"
    arrays = {"keypoints": np.zeros((1, 2, 3, 2)), "confidence": np.ones((1, 2, 3)), "fps": 30.0, "start_time": 0.0,
              "camera_names": np.array(["a"]), "keypoint_names": np.array(NAMES)}
    np.savez(path, **{**arrays, field: value})
    with pytest.raises(InputError, match=rf"bad\.npz: {field}: expected"):
        Capture.from_npz(path)


def test_slice_keeps_frames_in_half_open_interval():
    cap = make_capture(T=10)
    part = cap.slice(0.1, 0.2)  # frames 3, 4, 5 at 30 Hz (0.1 s is frame 3 exactly)
    assert part.num_frames == 3 and part.start_time == pytest.approx(0.1)
    np.testing.assert_array_equal(part.keypoints, cap.keypoints[:, 3:6])
    np.testing.assert_allclose(part.times, cap.times[3:6])
    with pytest.raises(InputError, match="no frame"):
        cap.slice(5.0, 6.0)


def test_aligned_to_reorders_cameras_to_the_rig():
    cap = make_capture()
    rig = make_rig(("cam03", "cam01", "cam02"))
    aligned = cap.aligned_to(rig)
    assert aligned.camera_names == rig.names
    np.testing.assert_array_equal(aligned.keypoints, cap.keypoints[[2, 0, 1]])
    np.testing.assert_array_equal(aligned.confidence, cap.confidence[[2, 0, 1]])


def test_camera_missing_from_calibration_is_named():
    cap = make_capture()
    with pytest.raises(InputError, match=r"cam03 not in the calibration 'calib_test.toml'"):
        cap.validate(make_rig(("cam01", "cam02")))
    with pytest.raises(InputError, match=r"no keypoints for calibration camera\(s\) cam04"):
        cap.validate(make_rig(("cam01", "cam02", "cam03", "cam04")))


def test_all_nan_keypoints_are_rejected():
    cap = make_capture()
    empty = Capture(np.full(cap.keypoints.shape, np.nan), cap.confidence, 30.0, NAMES, cap.camera_names, name="empty")
    with pytest.raises(InputError, match="'empty': every keypoint is NaN"):
        empty.validate(make_rig())


def _write_openpose(folder: Path, frames, prefix, J=3):
    """One OpenPose JSON per frame; ``frames`` maps frame number -> list of (J, 3) people."""
    folder.mkdir(parents=True, exist_ok=True)
    for f, people in frames.items():
        doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": np.asarray(p).ravel().tolist()} for p in people]}
        (folder / f"{prefix}_{f:012d}_keypoints.json").write_text(json.dumps(doc))


def test_openpose_reading_orders_frames_picks_most_confident_person_and_handles_empty_frames(tmp_path):
    rng = np.random.default_rng(5)
    truth = rng.uniform(10, 600, size=(2, 12, 3, 2))
    conf = rng.uniform(0.6, 1.0, size=(2, 12, 3))
    for c, cam in enumerate(["cam01", "cam02"]):
        frames = {}
        for t in range(12):
            person = np.concatenate([truth[c, t], conf[c, t, :, None]], axis=1)
            # A second, less confident person in every other frame.
            decoy = np.concatenate([truth[c, t] + 50, np.full((3, 1), 0.3)], axis=1)
            frames[t] = [decoy, person] if t % 2 else [person]
        frames[7] = []  # nobody found
        _write_openpose(tmp_path / cam, frames, prefix=cam)
    # OpenPose marks an undetected keypoint with zeros.
    doc_path = tmp_path / "cam02" / "cam02_000000000003_keypoints.json"
    doc = json.loads(doc_path.read_text())
    doc["people"][-1]["pose_keypoints_2d"][3:6] = [0, 0, 0]
    doc_path.write_text(json.dumps(doc))

    cap = Capture.from_openpose([tmp_path / "cam01", tmp_path / "cam02"], NAMES, fps=50.0)
    assert cap.camera_names == ("cam01", "cam02") and cap.num_frames == 12
    expected_kp, expected_conf = truth.copy(), conf.copy()
    expected_kp[:, 7], expected_conf[:, 7] = np.nan, 0.0
    expected_kp[1, 3, 1], expected_conf[1, 3, 1] = np.nan, 0.0
    np.testing.assert_allclose(cap.keypoints, expected_kp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cap.confidence, expected_conf, rtol=0, atol=1e-12)


def test_openpose_frame_numbers_sort_numerically_not_alphabetically(tmp_path):
    # Names without zero padding: "9" sorts after "10" alphabetically.
    folder = tmp_path / "camA"
    folder.mkdir()
    for f in (8, 9, 10, 11):
        doc = {"people": [{"pose_keypoints_2d": [float(f), 0.0, 1.0] * 3}]}
        (folder / f"frame{f}.json").write_text(json.dumps(doc))
    cap = Capture.from_openpose([folder], NAMES, fps=30.0)
    np.testing.assert_array_equal(cap.keypoints[0, :, 0, 0], [8, 9, 10, 11])


def test_openpose_folders_with_different_frame_counts_are_named(tmp_path):
    person = [np.ones((3, 3))]
    _write_openpose(tmp_path / "cam01", {t: person for t in range(4)}, "cam01")
    _write_openpose(tmp_path / "cam02", {t: person for t in range(3)}, "cam02")
    with pytest.raises(InputError, match=r"different numbers of frames: .*cam01 \(4\), .*cam02 \(3\)"):
        Capture.from_openpose([tmp_path / "cam01", tmp_path / "cam02"], NAMES, fps=30.0)


def test_openpose_wrong_keypoint_count_names_file(tmp_path):
    _write_openpose(tmp_path / "cam01", {0: [np.ones((4, 3))]}, "cam01")
    with pytest.raises(InputError, match=r"cam01_000000000000_keypoints\.json: people\[0\]\.pose_keypoints_2d: expected 9 values"):
        Capture.from_openpose([tmp_path / "cam01"], NAMES, fps=30.0)


@pytest.mark.skipif(not DEMO.exists(), reason="needs the shared Pose2Sim demo data")
def test_reads_the_pose2sim_demo_capture():
    cap = Capture.from_npz(DEMO)
    assert cap.keypoints.shape == (4, 100, 33, 2) and cap.fps == 60.0
    assert cap.camera_names == ("cam01", "cam02", "cam03", "cam04") and cap.keypoint_names[0] == "nose"


def test_mirror_pairs_match_left_and_right_keypoints_of_every_naming_style():
    from mjx_biomech.capture.captures import mirror_pairs

    names = ["nose", "left_knee", "right_knee", "mouth_left", "mouth_right", "LHeel", "RHeel", "Neck",
             "lkne", "rkne", "pelv", "hip_l", "hip_r", "rib", "left_only"]
    pairs = {(names[a], names[b]) for a, b in mirror_pairs(names)}
    assert pairs == {("left_knee", "right_knee"), ("mouth_left", "mouth_right"), ("LHeel", "RHeel"),
                     ("lkne", "rkne"), ("hip_l", "hip_r")}
    assert mirror_pairs(["nose", "neck"]).shape == (0, 2)
