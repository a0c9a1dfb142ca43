"""Synthetic walking, people, rigs and captures: their ground truth is what they claim."""

import jax
import mujoco
import numpy as np
import pytest

import mjx_biomech
from mjx_biomech.capture import projection, synthetic
from mjx_biomech.errors import InputError


@pytest.fixture(scope="module")
def model():
    return mjx_biomech.load_model()


@pytest.fixture(scope="module")
def walk(model):
    return synthetic.walking(model, duration=2.0, fps=50.0)


def _col(model, coords, name):
    return np.degrees(coords[:, model.coordinate_names.index(name)])


def test_walking_joint_angles_have_normative_ranges(model, walk):
    times, coords = walk
    assert times.shape == (100,) and coords.shape == (100, model.num_coordinates)
    hip, knee, ankle = (_col(model, coords, n) for n in ("hip_flexion_r", "knee_angle_r", "ankle_angle_r"))
    assert 28 <= hip.max() <= 34 and -12 <= hip.min() <= -8
    assert 55 <= knee.max() <= 65 and 0 <= knee.min() <= 8
    assert 10 <= ankle.max() <= 15 and -20 <= ankle.min() <= -14
    # Left is the right half a stride later; arms swing against the leg on their own side.
    cadence = synthetic.default_cadence(model, 1.3)
    half_stride = int(round(60.0 / cadence * 50.0))
    hip_l = _col(model, coords, "hip_flexion_l")
    assert np.corrcoef(hip[:-half_stride], hip_l[half_stride:])[0, 1] > 0.99
    assert np.corrcoef(hip, _col(model, coords, "arm_flex_r"))[0, 1] < -0.8
    # Coordinates without a curve stay neutral; everything stays in range.
    assert np.all(coords[:, model.coordinate_names.index("wrist_flex_r")] == model.neutral_coordinates()[31])
    lo, hi = model.coordinate_ranges.T
    assert np.all((coords >= lo) & (coords <= hi))


def test_walking_advances_at_speed_and_keeps_the_stance_foot_on_the_floor(model, walk):
    times, coords = walk
    tx = coords[:, model.coordinate_names.index("pelvis_tx")]
    assert np.allclose(np.diff(tx) / np.diff(times), 1.3)
    assert abs(tx[0] + tx[-1]) < 1e-12  # centred on the origin
    # MuJoCo's C kinematics is the oracle for where the feet are: the lowest point of each foot's
    # contact spheres.
    m = model.mj_model
    data = mujoco.MjData(m)
    feet = [[g for g in range(m.ngeom) if m.geom(g).name.startswith("foot_contact") and m.geom(g).name.endswith(s)] for s in ("_r", "_l")]

    def lowest_foot_points(q):
        data.qpos[:] = np.asarray(model.coords_to_qpos(q, model.default_params()))
        mujoco.mj_kinematics(m, data)
        return [np.min(data.geom_xpos[f, 2] - m.geom_size[f, 0]) for f in feet]

    lowest = np.array([lowest_foot_points(q) for q in coords])
    # Stance: the first 60 % of each foot's cycle, the right heel striking at phase 0, the left at 0.5.
    own_phase = np.mod(times[:, None] * synthetic.default_cadence(model, 1.3) / 120 + [0.0, 0.5], 1.0)
    stance = own_phase < 0.6
    assert np.max(np.abs(lowest[stance])) < 0.005
    assert np.min(lowest[~stance]) > -0.001  # a swinging foot does not go through the floor
    assert np.max(lowest[~stance]) > 0.02  # it lifts
    ty = coords[:, model.coordinate_names.index("pelvis_ty")]
    assert 0.02 < ty.max() - ty.min() < 0.1


def test_walking_seed_varies_the_person_but_not_the_shape(model, walk):
    _, a = walk
    _, b = synthetic.walking(model, duration=2.0, fps=50.0, seed=4)
    _, c = synthetic.walking(model, duration=2.0, fps=50.0, seed=4)
    assert np.array_equal(b, c)
    knee_a, knee_b = _col(model, a, "knee_angle_r"), _col(model, b, "knee_angle_r")
    assert 0.5 < np.max(np.abs(knee_a - knee_b)) < 10
    assert np.corrcoef(knee_a, knee_b)[0, 1] > 0.98


def test_person_has_scales_off_one_and_centimetre_marker_offsets(model):
    p = synthetic.person(model, seed=2, marker_set="halpe26")
    dev = np.abs(np.asarray(p.scales) - 1)
    assert np.all((dev >= 0.05) & (dev <= 0.10))
    norms = np.linalg.norm(np.asarray(p.offsets), axis=1)
    ids = model.marker_site_ids("halpe26")
    assert np.all((norms[ids] >= 0.01) & (norms[ids] <= 0.02))
    assert np.count_nonzero(norms) == len(ids)


def test_ring_rig_cameras_surround_and_look_at_the_walkway():
    rig = synthetic.ring_rig(n_cameras=6, radius=4.0, height=1.5)
    centers = np.asarray(rig.centers)
    assert np.allclose(np.linalg.norm(centers[:, :2], axis=1), 4.0) and np.allclose(centers[:, 2], 1.5)
    uv = np.asarray(projection.project(rig, np.array([0.0, 0.0, 0.9])))
    assert np.allclose(uv, [(1920 - 1) / 2, (1080 - 1) / 2], atol=1e-6)
    # A point above the target is higher in every image (smaller v).
    assert np.all(np.asarray(projection.project(rig, np.array([0.0, 0.0, 1.5])))[:, 1] < uv[:, 1])


def test_capture_noise_dropouts_and_outliers_match_their_settings(model, walk):
    times, coords = walk
    params = synthetic.person(model, seed=1, marker_set="coco17")
    rig = synthetic.ring_rig()
    cap = synthetic.capture(model, params, times, coords, rig, "coco17", noise_px=2.0, dropout=0.2,
                            outlier_fraction=0.05, seed=3)
    assert cap.keypoints.shape == (8, 100, 17, 2) and cap.fps == pytest.approx(50.0)
    seen = cap.confidence > 0
    assert np.all(np.isnan(cap.keypoints[~seen])) and np.all(np.isfinite(cap.keypoints[seen]))
    assert abs(1 - seen.mean() - 0.2) < 0.02
    true = np.asarray(projection.project(rig, jax.jit(jax.vmap(lambda q: model.markers(q, params, "coco17")))(coords)))
    err = np.linalg.norm(cap.keypoints - true, axis=-1)[seen]
    outliers = err > 15
    assert abs(outliers.mean() - 0.05) < 0.015
    # Inliers: 2D Gaussian with sigma 2 px per axis has RMS radius 2·sqrt(2).
    assert np.sqrt(np.mean(err[~outliers] ** 2)) == pytest.approx(2 * np.sqrt(2), rel=0.05)
    assert np.all(cap.confidence[seen][outliers] <= 0.7) and np.all(cap.confidence[seen][~outliers] >= 0.6)


def test_bad_settings_and_unknown_marker_sets_are_named(model, walk):
    times, coords = walk
    with pytest.raises(InputError, match="marker_set 'no_such_set'"):
        synthetic.person(model, marker_set="no_such_set")
    with pytest.raises(InputError, match="capture: expected noise_px >= 0"):
        synthetic.capture(model, model.default_params(), times, coords, synthetic.ring_rig(), "coco17", noise_px=-1.0)
    with pytest.raises(InputError, match="camera 'cam9' is not in the calibration"):
        synthetic.perturb_cameras(synthetic.ring_rig(), ["cam9"])
