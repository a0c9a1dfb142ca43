"""Metrics on constructed inputs whose answers are known by construction or counted by hand."""

import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mjx_biomech.analysis.metrics import (  # noqa: E402
    bias_removed_rmse,
    bland_altman,
    gait_events,
    gc_curve,
    gc_d,
    match_events,
    plot_bland_altman,
    reprojection_errors,
    rmse,
    sigma_niqr,
    step_metrics,
    walking_speed_per_cycle,
)
from mjx_biomech.capture.cameras import Camera, CameraRig  # noqa: E402
from mjx_biomech.capture.projection import project  # noqa: E402
from mjx_biomech.errors import InputError  # noqa: E402


def test_gc_d_counts_confident_keypoints_within_threshold():
    errors = np.array([1.0, 4.0, 5.0, 6.0, 10.0, np.nan])
    conf = np.array([0.9, 0.9, 0.4, 0.9, 0.5, 0.9])
    # Confident: indices 0, 1, 3, 4, 5 (index 2 is below 0.5); within 5 px: 0 and 1; the NaN
    # error of a confident keypoint is a miss.
    assert gc_d(errors, conf, d=5.0) == pytest.approx(2 / 5)
    np.testing.assert_allclose(gc_curve(errors, conf, [0.5, 1.0, 6.0, 100.0]), [0, 1 / 5, 3 / 5, 4 / 5])
    assert math.isnan(gc_d(errors, np.zeros_like(conf)))


def test_sigma_niqr():
    # Percentiles of 1..101 (linear interpolation): Q25 = 26, Q75 = 76.
    assert sigma_niqr(np.arange(1, 102)) == pytest.approx(0.7413 * 50)
    # NaNs are ignored; for Gaussian data it estimates the standard deviation.
    x = np.random.default_rng(0).normal(0, 2.0, size=400_000)
    assert sigma_niqr(np.append(x, np.nan)) == pytest.approx(2.0, rel=0.01)


def test_rmse_and_bias_removed_rmse():
    b = np.array([[0.0, 1.0], [2.0, 3.0]])
    a = b + np.array([[3.0, 4.0], [1.0, 3.0]])
    assert rmse(a, b) == pytest.approx(math.sqrt((9 + 16 + 1 + 9) / 4))
    np.testing.assert_allclose(rmse(a, b, axis=1), [math.sqrt(12.5), math.sqrt(5.0)])
    # Differences 3, 4, 1, 3 have mean 2.75; deviations 0.25, 1.25, -1.75, 0.25.
    assert bias_removed_rmse(a, b) == pytest.approx(math.sqrt((0.0625 + 1.5625 + 3.0625 + 0.0625) / 4))
    # Row-wise: a constant offset per row disappears entirely.
    np.testing.assert_allclose(bias_removed_rmse(b + [[5.0], [-2.0]], b, axis=1), [0.0, 0.0], atol=1e-15)


def test_reprojection_errors_measure_pixel_offsets_and_flag_points_behind():
    cams = [
        Camera("front", (640, 480), 500.0, 500.0, 320.0, 240.0, [0.1, 0, 0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]),
        Camera("side", (640, 480), 480.0, 480.0, 300.0, 250.0, np.zeros(5), [0.0, 0.3, 0.0], [0.1, 0.0, 2.5]),
    ]
    rig = CameraRig.from_cameras(cams)
    pts = np.random.default_rng(1).uniform(-0.3, 0.3, size=(4, 3, 3))
    kp = np.asarray(project(rig, pts)) + np.array([3.0, -4.0])
    err = np.asarray(reprojection_errors(rig, pts, kp))
    assert err.shape == (2, 4, 3)
    np.testing.assert_allclose(err, 5.0, atol=1e-9)
    behind = pts.copy()
    behind[0, 0] = [-10.0, 0.0, -3.5]  # depth -0.5 m in the front camera, +2.1 m in the side one
    err = np.asarray(reprojection_errors(rig, behind, kp))
    assert np.isnan(err[0, 0, 0]) and np.count_nonzero(np.isnan(err)) == 1


def test_gait_events_from_sinusoidal_heel_height():
    fps, f = 100.0, 1.0
    t = np.arange(300) / fps
    s = np.sin(2 * np.pi * f * t)
    heel = 0.05 + 0.05 * s
    ev = gait_events(heel, heel + 0.02, fps, threshold=0.03, hysteresis=0.01)
    # Contact starts once sin < -0.4 (height < 0.03) and ends once sin > -0.2 (height > 0.04):
    # within each cycle k, at phases past 1/2 + asin(0.4)/2π and 1 − asin(0.2)/2π.
    enter = np.arange(3) + 0.5 + math.asin(0.4) / (2 * math.pi)
    leave = np.arange(3) + 1.0 - math.asin(0.2) / (2 * math.pi)
    np.testing.assert_array_equal(ev.strike_frames, np.floor(enter * fps).astype(int) + 1)
    np.testing.assert_array_equal(ev.off_frames, np.floor(leave * fps).astype(int) + 1)
    np.testing.assert_allclose(ev.strike_times, ev.strike_frames / fps)
    assert ev.contact.sum() == sum(o - s for s, o in zip(ev.strike_frames, ev.off_frames))


def test_gait_event_hysteresis_ignores_wobble_and_toe_counts():
    heel = np.array([0.10, 0.05, 0.025, 0.035, 0.02, 0.035, 0.06, 0.10, 0.10, 0.10])
    ev = gait_events(heel, None, 100.0, threshold=0.03, hysteresis=0.01)
    np.testing.assert_array_equal(ev.strike_frames, [2])
    np.testing.assert_array_equal(ev.off_frames, [6])
    no_band = gait_events(heel, None, 100.0, threshold=0.03, hysteresis=0.0)
    np.testing.assert_array_equal(no_band.strike_frames, [2, 4])
    np.testing.assert_array_equal(no_band.off_frames, [3, 5])
    # A toe touching down first starts the contact earlier.
    toe = np.array([0.10, 0.01, 0.01, 0.05, 0.05, 0.05, 0.06, 0.10, 0.10, 0.10])
    ev = gait_events(heel, toe, 100.0, threshold=0.03, hysteresis=0.01)
    np.testing.assert_array_equal(ev.strike_frames, [1])
    np.testing.assert_array_equal(ev.off_frames, [6])
    # Penetration criterion (threshold 0): a foot that starts planted makes no event at frame 0.
    ev = gait_events(np.array([-0.01, -0.01, 0.02, 0.03, -0.002]), None, 100.0, threshold=0.0, hysteresis=0.01)
    np.testing.assert_array_equal(ev.strike_frames, [4])
    np.testing.assert_array_equal(ev.off_frames, [2])


def test_gait_events_drop_contacts_shorter_than_a_stance():
    """At 30 frames/s a swinging foot that scuffs the floor for 2 frames (67 ms) makes no strike
    with a 100 ms least contact; a 3-frame contact (100 ms), a long stance and a contact still going
    on at the end do."""
    up, down = 0.05, 0.0
    z = np.array([up] * 3 + [down] * 2 + [up] * 3 + [down] * 3 + [up] * 3 + [down] * 10 + [up] * 3 + [down] * 2)
    scuffs = gait_events(z, None, 30.0, threshold=0.005, hysteresis=0.01)
    np.testing.assert_array_equal(scuffs.strike_frames, [3, 8, 14, 27])
    ev = gait_events(z, None, 30.0, threshold=0.005, hysteresis=0.01, min_contact=0.1)
    np.testing.assert_array_equal(ev.strike_frames, [8, 14, 27])
    np.testing.assert_array_equal(ev.off_frames, [11, 24])
    assert not ev.contact[3:5].any() and ev.contact[8:11].all() and ev.contact[27:].all()
    with pytest.raises(InputError, match="min_contact"):
        gait_events(z, None, 30.0, min_contact=float("nan"))


def _walk(step=0.7, width=0.2, heading_deg=30.0, frames_per_step=30, fps=100.0):
    """Heels of a constructed walk: each heel rests on its footprint for one step time, then
    swings straight to its next footprint. Left strikes at frames 0, 60, 120; right at 30, 90, 150."""
    h = math.radians(heading_deg)
    fwd, lat = np.array([math.cos(h), math.sin(h), 0.0]), np.array([-math.sin(h), math.cos(h), 0.0])
    T = 5 * frames_per_step + 1

    def heel(first_strike, offset_along, side):
        pos = np.zeros((T, 3))
        for t in range(T):
            k, r = divmod(t - first_strike, 2 * frames_per_step)
            # Resting on footprint k for one step time, then swinging to footprint k + 1.
            along = k * 2 * step + (0.0 if r < frames_per_step else 2 * step * (r - frames_per_step) / frames_per_step)
            lift = 0.0 if r < frames_per_step else 0.05 * math.sin(math.pi * (r - frames_per_step) / frames_per_step)
            pos[t] = (offset_along + along) * fwd + side * width / 2 * lat + [0, 0, 0.03 + lift]
        return pos

    left = heel(0, 0.0, +1)
    right = heel(frames_per_step, step, -1)
    strikes_left = np.arange(0, T, 2 * frames_per_step)
    strikes_right = np.arange(frames_per_step, T, 2 * frames_per_step)
    t = np.arange(T)
    speed = step / (frames_per_step / fps)
    pelvis = (speed * t / fps)[:, None] * fwd + 0.02 * np.sin(np.pi * t / frames_per_step)[:, None] * lat + [0, 0, 0.9]
    return left, right, strikes_left, strikes_right, pelvis, fwd[:2], speed


def test_step_metrics_on_constructed_walk():
    left, right, sl, sr, pelvis, fwd, _ = _walk()
    for kwargs in ({}, {"pelvis": pelvis}, {"direction": fwd}):
        m = step_metrics(left, right, sl, sr, **kwargs)
        np.testing.assert_allclose(m.direction, fwd, atol=1e-12)
        np.testing.assert_array_equal(m.step_frames, [0, 30, 60, 90, 120, 150])
        np.testing.assert_array_equal(m.step_side, ["left", "right"] * 3)
        np.testing.assert_allclose(m.step_length, 0.7, atol=1e-12)
        np.testing.assert_allclose(m.step_width, 0.2, atol=1e-12)
        np.testing.assert_array_equal(m.stride_frames, [0, 30, 60, 90])
        np.testing.assert_allclose(m.stride_length, 1.4, atol=1e-12)


def test_walking_speed_per_cycle():
    _, _, sl, _, pelvis, fwd, speed = _walk()
    np.testing.assert_allclose(walking_speed_per_cycle(pelvis, sl, 100.0, direction=fwd), [speed, speed], rtol=1e-12)
    # The lateral sway is zero at every left strike, so the plain horizontal distance agrees.
    np.testing.assert_allclose(walking_speed_per_cycle(pelvis, sl, 100.0), [speed, speed], rtol=1e-12)


def test_match_events_hungarian_drops_far_pairs():
    m = match_events([0.1, 1.05, 2.2, 5.0], [0.0, 1.0, 2.0, 3.0], max_offset=0.5)
    np.testing.assert_array_equal(m.pred_index, [0, 1, 2])
    np.testing.assert_array_equal(m.ref_index, [0, 1, 2])
    np.testing.assert_allclose(m.errors, [0.1, 0.05, 0.2])
    np.testing.assert_array_equal(m.unmatched_pred, [3])
    np.testing.assert_array_equal(m.unmatched_ref, [3])
    # Pairing the nearest events first (1.05 with 1.0) would leave 0.9 without a partner within
    # 0.5 s; the assignment keeps two pairs instead.
    m = match_events([0.9, 1.05], [1.0, 1.5], max_offset=0.5)
    np.testing.assert_array_equal(m.ref_index, [0, 1])
    np.testing.assert_allclose(m.errors, [-0.1, -0.45])


def test_bland_altman_and_plot(tmp_path):
    b = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    a = b + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ba = bland_altman(a, b)
    # Differences 1..5: mean 3, sample variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5.
    assert ba.bias == pytest.approx(3.0)
    assert ba.sd == pytest.approx(math.sqrt(2.5))
    assert ba.lower == pytest.approx(3.0 - 1.96 * math.sqrt(2.5))
    assert ba.upper == pytest.approx(3.0 + 1.96 * math.sqrt(2.5))
    path = plot_bland_altman(a, b, tmp_path / "plots" / "ba.png", title="knee", units="deg")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["ba.png"]


def test_bad_arguments_are_named():
    left, right, sl, sr, pelvis, _, _ = _walk()
    with pytest.raises(InputError, match="fps: expected a positive frame rate"):
        gait_events(np.zeros(5), None, 0.0)
    with pytest.raises(InputError, match="fps: expected a positive frame rate"):
        walking_speed_per_cycle(pelvis, sl, float("nan"))
    with pytest.raises(InputError, match=r"direction: expected a non-zero horizontal vector \(2,\)"):
        step_metrics(left, right, sl, sr, direction=[0.0, 0.0])
    with pytest.raises(InputError, match="max_offset: expected ≥ 0 s"):
        match_events([0.0], [0.0], max_offset=-1.0)
