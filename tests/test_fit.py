"""Fitting synthetic multi-camera captures: the ground truth of the synthetic person is the oracle.

One synthetic trial (the bundled model walking 1.5 s at 30 fps, 8 cameras, 1.5 px noise, 10 %
dropouts, 1 % outliers, the 87 BML-MoVi keypoints) is shared by every test, so the compiled
AdamW step is built once per module.
"""

import dataclasses
import json
import tomllib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import huber

import mjx_biomech
from converters import fit_output
from converters.mot import read_mot
from converters.trc import read_trc
from mjx_biomech.analysis import metrics, plausibility, plots
from mjx_biomech.analysis.results import FitResult, TrialResult, holdout_scores, truth_metrics
from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture import synthetic
from mjx_biomech.capture.cameras import extrinsic_difference
from mjx_biomech.capture.captures import Capture, mirror_pairs
from mjx_biomech.capture.projection import project
from mjx_biomech.errors import InputError
from mjx_biomech.fitting import anthropometry, initialisation, losses, objective, trajectories
from mjx_biomech.fitting.fit import fit
from mjx_biomech.fitting.solvers import adam
from mjx_biomech.fitting.variables import FitSetup

MARKERS = "bml_movi_87"
# Offsets towards 0 weigh more than the library default: the true offsets are 0 here, and the
# pelvis tilt is otherwise traded against offsets of the pelvis markers (see test_population).
SETTINGS = dict(solver="adam", representation="spline", steps=3000, lr=3e-2, offset_weight=30.0)


@pytest.fixture(scope="module")
def model():
    return mjx_biomech.load_model()


def _walk(model, duration: float) -> dict:
    """The synthetic person walking ``duration`` s at 30 fps, seen by the 8-camera ring."""
    times, coords = synthetic.walking(model, duration=duration, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set=MARKERS, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig()
    cap = synthetic.capture(model, person, times, coords, rig, MARKERS, noise_px=1.5, dropout=0.1, seed=2)
    return dict(times=times, coords=coords, person=person, rig=rig, capture=cap)


@pytest.fixture(scope="module")
def trial(model):
    return _walk(model, 1.5)


@pytest.fixture(scope="module")
def plain_fit(model, trial):
    return fit(model, trial["capture"], trial["rig"], MARKERS, bundle_adjust=False, **SETTINGS)


def test_fit_recovers_scales_and_joint_angles_of_a_synthetic_person(model, trial, plain_fit):
    m = truth_metrics(plain_fit, trial["person"], trial["coords"], skip_seconds=0.5)
    assert m["scale_error_max_pct"] <= 1.0
    assert m["joint_rmse_deg"] <= 1.5
    assert plain_fit.metrics["gc5"] >= 0.95
    # The person is not the model: the scales moved from 1 by 5-10 %.
    assert np.max(np.abs(np.asarray(plain_fit.params.scales) - 1)) > 0.04
    assert plain_fit.loss_history[-1] < 0.1 * plain_fit.loss_history[0]
    # The result is complete when returned, and immutable.
    assert set(plain_fit.metrics["trials"]["synthetic"]["left_right_relabelled"]) == set(trial["rig"].names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain_fit.metrics = {}


@pytest.mark.slow
def test_bundle_adjustment_recovers_a_perturbed_camera_and_raises_gc5(model):
    # 4 s of walking: on 1.5 s even the exact optimum of the objective (reached from the true
    # cameras and body) leaves the side camera's centre ~9 mm off; on 4 s it is ~2-3 mm.
    walk = _walk(model, 4.0)
    coords, person, rig, cap = walk["coords"], walk["person"], walk["rig"], walk["capture"]
    bad = synthetic.perturb_cameras(rig, ["cam3"], angle_deg=2.0, distance_m=0.02, seed=5)
    settings = dict(SETTINGS, steps=1500)
    without = fit(model, cap, bad, MARKERS, bundle_adjust=False, **settings)
    adjusted = fit(model, cap, bad, MARKERS, bundle_adjust=True, **settings)
    angle, distance = extrinsic_difference(rig, adjusted.rig)
    angle0, distance0 = extrinsic_difference(rig, bad)
    i = rig.index("cam3")
    assert angle0[i] == pytest.approx(2.0) and distance0[i] == pytest.approx(0.02)
    assert angle[i] <= 0.3 and distance[i] <= 0.003
    # The gauge: the first camera is held, the second keeps its distance from it.
    assert angle[0] <= 1e-9 and distance[0] <= 1e-12
    np.testing.assert_allclose(np.linalg.norm(adjusted.rig.centers[1] - adjusted.rig.centers[0]),
                               np.linalg.norm(rig.centers[1] - rig.centers[0]), rtol=1e-12)
    # The cameras that were right move only by the estimate's noise.
    others = np.arange(len(rig)) != i
    assert np.all(angle[others] <= 0.1) and np.all(distance[others] <= 0.01)
    cam3 = lambda r: r.metrics["trials"]["synthetic"]["per_camera"]["cam3"]["gc5"]  # noqa: E731
    assert cam3(adjusted) > cam3(without) + 0.05
    assert adjusted.metrics["gc5"] > without.metrics["gc5"]
    assert adjusted.rig.names == bad.names
    m = truth_metrics(adjusted, person, coords, skip_seconds=0.5)
    assert m["scale_error_max_pct"] <= 1.0 and m["joint_rmse_deg"] <= 1.5


def test_left_right_swaps_of_a_detector_are_found_and_undone(model, trial, plain_fit):
    """Whole-body swaps in cam2 and cam5 and legs-only swaps in cam7, each in a quarter of the
    frames (as 2D detectors do when a person faces away or the legs cross): the fit exchanges
    them back and recovers the person as well as on the clean capture."""
    cap = trial["capture"]
    names = list(cap.keypoint_names)
    pairs = mirror_pairs(names)
    legs = np.array([any(k in names[a] for k in ("hip", "thigh", "kne", "ank", "hee", "toe", "meta", "shin", "foo"))
                     for a, _ in pairs])
    rng = np.random.default_rng(7)
    T = cap.num_frames
    truth = np.zeros((cap.num_cameras, T, len(pairs)), bool)
    for cam, which in (("cam2", np.ones(len(pairs), bool)), ("cam5", np.ones(len(pairs), bool)), ("cam7", legs)):
        frames = rng.choice(T, T // 4, replace=False)
        truth[cap.camera_names.index(cam)][np.ix_(frames, np.flatnonzero(which))] = True
    kp, conf = cap.keypoints.copy(), cap.confidence.copy()
    a, b = pairs[:, 0], pairs[:, 1]
    kp[:, :, a], kp[:, :, b] = np.where(truth[..., None], cap.keypoints[:, :, b], cap.keypoints[:, :, a]), \
        np.where(truth[..., None], cap.keypoints[:, :, a], cap.keypoints[:, :, b])
    conf[:, :, a], conf[:, :, b] = np.where(truth, cap.confidence[:, :, b], cap.confidence[:, :, a]), \
        np.where(truth, cap.confidence[:, :, a], cap.confidence[:, :, b])
    swapped = Capture(kp, conf, cap.fps, cap.keypoint_names, cap.camera_names, name=cap.name)

    result = fit(model, swapped, trial["rig"], MARKERS, bundle_adjust=False, **SETTINGS)
    counts = result.metrics["trials"]["synthetic"]["left_right_relabelled"]
    # Which exchanges can be seen at all: both detections present and their true positions more
    # than 20 px apart in that camera (closer than that, either labelling fits).
    uv = np.asarray(project(trial["rig"], jax.vmap(lambda q: model.markers(q, trial["person"], MARKERS))(trial["coords"])))
    apart = np.linalg.norm(uv[:, :, a] - uv[:, :, b], axis=-1) > 20
    seen = (cap.confidence[:, :, a] > 0) & (cap.confidence[:, :, b] > 0)
    visible = truth & apart & seen
    assert sum(counts.values()) >= 0.9 * visible.sum()
    # Nothing relabelled where the detector was right, beyond the ambiguous pairs.
    assert sum(counts.values()) <= truth.sum() + 0.02 * (~truth).sum()
    assert counts["cam1"] <= 0.02 * T * len(pairs)
    # The scores count the exchanged detections and score them as relabelled: cam2, a quarter of
    # whose detections the detector swapped, scores like a camera without swaps.
    scores = result.metrics["trials"]["synthetic"]
    relabelled = scores["detections_relabelled"]
    assert relabelled["cam2"] >= 2 * 0.9 * visible[cap.camera_names.index("cam2")].sum() and relabelled["cam1"] <= relabelled["cam2"] / 10
    assert scores["per_camera"]["cam2"]["gc5"] >= scores["per_camera"]["cam1"]["gc5"] - 0.02
    m = truth_metrics(result, trial["person"], trial["coords"], skip_seconds=0.5)
    clean = truth_metrics(plain_fit, trial["person"], trial["coords"], skip_seconds=0.5)
    assert m["scale_error_max_pct"] <= 1.0 and m["joint_rmse_deg"] <= 1.5
    assert m["joint_rmse_deg"] <= clean["joint_rmse_deg"] + 0.3


@pytest.mark.slow
def test_levenberg_marquardt_on_the_spline_recovers_the_person(model):
    # The banded LM over the spline's control points (solvers/spline_lm.py) on every frame.
    walk = _walk(model, 0.6)
    coords, person, rig, cap = walk["coords"], walk["person"], walk["rig"], walk["capture"]
    result = fit(model, cap, rig, MARKERS, solver="lm", steps=25, bundle_adjust=False, offset_weight=30.0)
    m = truth_metrics(result, person, coords, skip_seconds=0.1)
    assert m["scale_error_max_pct"] <= 1.0
    assert m["joint_rmse_deg"] <= 1.5
    assert result.metrics["gc5"] >= 0.95


def test_fit_rejects_a_camera_missing_from_the_calibration(model, trial):
    cap = trial["capture"]
    renamed = Capture(cap.keypoints, cap.confidence, cap.fps, cap.keypoint_names,
                      ("cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "cam7", "side"), name="walk")
    with pytest.raises(InputError, match="side.*not in the calibration"):
        fit(model, renamed, trial["rig"], MARKERS, steps=1)


def test_fit_rejects_all_nan_keypoints(model, trial):
    cap = trial["capture"]
    empty = Capture(np.full_like(cap.keypoints, np.nan), cap.confidence, cap.fps, cap.keypoint_names, cap.camera_names, name="empty")
    with pytest.raises(InputError, match="every keypoint is NaN"):
        fit(model, empty, trial["rig"], MARKERS, steps=1)


def test_mismatched_frame_counts_and_marker_sets_are_clear_errors(model, trial):
    cap = trial["capture"]
    with pytest.raises(InputError, match="confidence: expected shape"):
        Capture(cap.keypoints, cap.confidence[:, :-3], cap.fps, cap.keypoint_names, cap.camera_names)
    with pytest.raises(InputError, match="not marker set 'coco17'"):
        fit(model, cap, trial["rig"], "coco17", steps=1)
    with pytest.raises(InputError, match="solver='lm' fits the spline"):
        fit(model, cap, trial["rig"], MARKERS, solver="lm", representation="mlp")
    for name, value in (("huber_delta_px", float("nan")), ("huber_delta_px", 0.0), ("knots_per_second", float("inf"))):
        with pytest.raises(InputError, match=f"{name}: expected a finite number > 0"):
            fit(model, cap, trial["rig"], MARKERS, **{name: value})


SHORT_BA = dict(SETTINGS, steps=40, bundle_adjust=True, ba_start_fraction=0.5)


@pytest.fixture(scope="module")
def short_ba_fit(model, trial):
    """A few AdamW steps with bundle adjustment: enough for what a fit writes, not for accuracy."""
    return fit(model, trial["capture"], trial["rig"], MARKERS, **SHORT_BA)


def test_an_interrupted_and_resumed_fit_equals_an_uninterrupted_one(model, trial, short_ba_fit, tmp_path):
    short = SHORT_BA
    whole = short_ba_fit

    class Interrupt(Exception):
        pass

    def stop(stage, done, total, info):
        if stage == "adam" and done == 25:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(model, trial["capture"], trial["rig"], MARKERS, checkpoint_dir=tmp_path, checkpoint_every=10, progress=stop, **short)
    assert (tmp_path / "checkpoint.eqx").exists()
    seen = []

    def record(stage, done, total, info):
        if stage == "adam":
            seen.append(done)

    resumed = fit(model, trial["capture"], trial["rig"], MARKERS, checkpoint_dir=tmp_path, checkpoint_every=10,
                  progress=record, **short)
    assert seen[0] == 20  # resumed from the checkpoint at step 20, not from the start
    np.testing.assert_array_equal(resumed.trials[0].coords, whole.trials[0].coords)
    np.testing.assert_array_equal(np.asarray(resumed.params.scales), np.asarray(whole.params.scales))
    np.testing.assert_array_equal(np.asarray(resumed.rig.tvec), np.asarray(whole.rig.tvec))
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)
    # A checkpoint of another fit is refused rather than silently mixed in.
    with pytest.raises(InputError, match="belongs to a fit with other data or settings"):
        fit(model, trial["capture"], trial["rig"], MARKERS, checkpoint_dir=tmp_path, **dict(short, steps=41))


def test_a_fit_reports_each_stage_through_its_progress_callback_and_prints_nothing(model, trial, capsys):
    calls = []
    fit(model, trial["capture"], trial["rig"], MARKERS, **dict(SETTINGS, steps=6, ba_start_fraction=0.5, ba_iterations=2),
        progress=lambda *call: calls.append(call))
    adam_calls = [(done, total) for stage, done, total, _ in calls if stage == "adam"]
    assert adam_calls == [(d, 6) for d in range(7)]
    assert {stage for stage, *_ in calls} == {"adam", "bundle adjustment"}
    # Every stage opens with an empty report; the steps after it carry the loss.
    for _, done, total, info in calls:
        assert ("loss" in info) == (info != {}) and 0 <= done <= total
        if "loss" in info:
            assert np.isfinite(float(info["loss"]))
    assert capsys.readouterr() == ("", "")


def test_the_learning_rate_decays_1000_fold_and_restarts_at_a_tenth_when_bundle_adjustment_starts():
    steps, start, lr = 400, 300, 3e-2
    plain = adam.learning_rates(adam.decay(lr, steps), steps)
    np.testing.assert_allclose(plain, lr * 1e-3 ** (np.arange(steps) / steps), rtol=1e-5)
    restarted = adam.learning_rates(adam.decay(lr, steps, restart=start), steps)
    k = np.arange(steps)
    paper = np.where(k < start, lr * 1e-2 ** (k / start), 0.1 * lr * 1e-2 ** ((k - start) / (steps - start)))
    np.testing.assert_allclose(restarted, paper, rtol=1e-5)
    cameras = adam.learning_rates(adam.camera_decay(1e-3, steps, start), steps)
    np.testing.assert_allclose(cameras, np.where(k < start, 0.0, 1e-3 * 1e-3 ** ((k - start) / (steps - start))), rtol=1e-5)


def test_point_residuals_are_the_huber_loss_of_3d_marker_distances_and_skip_missing_targets():
    rng = np.random.default_rng(3)
    targets = rng.normal(size=(4, 5, 3))
    # Distances on both sides of the 5 cm threshold.
    points = targets + rng.normal(size=(4, 5, 3)) * rng.choice([0.01, 0.2], size=(4, 5, 1))
    weights = rng.uniform(0.5, 2.0, size=(4, 5))
    targets[1, 2] = np.nan  # a marker that was not seen
    r = losses.point_residuals(jnp.asarray(points), jnp.asarray(targets), jnp.asarray(weights), delta_m=0.05)
    assert r.shape == (4, 5, 3)
    d = np.linalg.norm(points - targets, axis=-1)
    expected = np.where(np.isnan(d), 0.0, weights * huber(0.05, np.nan_to_num(d)))
    np.testing.assert_allclose(0.5 * np.sum(np.asarray(r) ** 2, axis=-1), expected, rtol=1e-4, atol=1e-12)
    g = jax.grad(lambda p: losses.sum_of_squares(losses.point_residuals(p, jnp.asarray(targets))))(jnp.asarray(points))
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[1, 2] == 0)


def test_missing_observations_contribute_nothing_and_give_no_nan_gradients():
    rig = synthetic.ring_rig(n_cameras=3)
    rng = np.random.default_rng(0)
    points = jnp.asarray(rng.normal(scale=0.3, size=(5, 4, 3)) + [0, 0, 0.9])
    observed = np.asarray(project(rig, points)) + rng.normal(size=(3, 5, 4, 2))
    conf = np.ones((3, 5, 4))
    observed[0, 1, 2] = np.nan  # not detected
    conf[1, 2, 3] = 0.0  # detected with zero confidence
    far = points.at[4, 0].set(jnp.asarray(rig.centers[2]) + 0.0)  # a point at camera 3's centre (depth 0)

    def loss(p):
        return losses.sum_of_squares(losses.reprojection_residuals(rig, p, observed, conf, delta_px=2.0))

    g = jax.grad(loss)(far)
    assert np.all(np.isfinite(np.asarray(g)))
    # Changing a masked observation changes nothing.
    moved = observed.copy()
    moved[1, 2, 3] += 50.0
    assert float(losses.sum_of_squares(losses.reprojection_residuals(rig, far, moved, conf, 2.0))) == pytest.approx(float(loss(far)))
    # Huber: beyond delta the loss grows linearly, with the weighted residual's half square equal to it.
    d = jnp.array([[3.0, 4.0]])
    r = losses.robust_residuals(d, jnp.array([0.5]), delta=2.0)
    assert 0.5 * float(jnp.sum(r**2)) == pytest.approx(0.5 * 2.0 * (5.0 - 1.0))


def test_trajectories_stay_in_joint_ranges_and_the_mlp_encodes_time_in_29_dimensions(model, trial):
    cmap = trajectories.coordinate_map(model)
    times, coords = trial["times"], trial["coords"]
    spline = trajectories.spline_from_coords(cmap, times, coords, knots_per_second=12.0)
    wild = eqx.tree_at(lambda sp: sp.control, spline, 50.0 * jnp.sign(spline.control))
    q = np.asarray(wild(jnp.asarray(times)))
    lo, hi = model.coordinate_ranges.T
    bounded = ~trajectories.root_coordinates(model)
    assert np.all((q[:, bounded] >= lo[bounded] - 1e-12) & (q[:, bounded] <= hi[bounded] + 1e-12))
    # The spline through the walk reproduces it (knee within 3 degrees: the margin at full extension).
    knee = model.coordinate_names.index("knee_angle_r")
    assert np.max(np.abs(np.asarray(spline(jnp.asarray(times)))[:, knee] - coords[:, knee])) < np.radians(3.0)
    assert trajectories.time_encoding(jnp.asarray(times), 0.0, 1.5).shape == (len(times), 29)
    mlp = trajectories.mlp_from_coords(cmap, times, coords, jax.random.PRNGKey(0), width=32, depth=2)
    assert mlp(jnp.asarray(times)).shape == coords.shape



# ------------------------------------------------------------------ a robust start
@pytest.mark.parametrize("marker_set, cameras, turn_deg", [("bml_movi_87", 4, 0.0), ("blazepose33", 8, 178.0)])
def test_initial_heading_and_position_survive_missing_and_wrong_keypoints(model, marker_set, cameras, turn_deg):
    """Half the detections missing and 5 % of them 20-150 px off: the start of a fit still has
    the walker's heading within 5 degrees in every frame (no outlier unwrapped into a full
    turn, also when the heading straddles ±180 degrees) and its position within 5 cm."""
    times, coords = synthetic.walking(model, duration=3.0, fps=30.0, seed=1)
    yaw = model.coordinate_names.index("pelvis_rotation")
    coords[:, yaw] += np.radians(turn_deg)
    # Without marker offsets the model's own keypoints are the person's: the heading is defined.
    person = synthetic.person(model, seed=1, marker_set=marker_set, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig(n_cameras=cameras)
    position = [model.coordinate_names.index(n) for n in ("pelvis_tx", "pelvis_ty", "pelvis_tz")]
    for dropout in (0.3, 0.5):
        cap = synthetic.capture(model, person, times, coords, rig, marker_set, dropout=dropout, outlier_fraction=0.05, seed=3)
        guess = initialisation.initial_root(model, cap, rig, marker_set)
        filled = trajectories.fill_missing(times, guess.coords)
        heading_error = np.degrees(np.angle(np.exp(1j * (filled[:, yaw] - coords[:, yaw]))))
        assert np.max(np.abs(heading_error)) <= 5.0, dropout
        # Unwrapped: consecutive frames never jump by a turn.
        assert np.max(np.abs(np.diff(filled[:, yaw]))) < np.radians(10.0)
        assert np.max(np.abs(filled[:, position] - coords[:, position])) <= 0.05, dropout


# ------------------------------------------------------------------ plausible bodies
def _setup(model, **kw) -> FitSetup:
    return FitSetup(model=model, marker_set=MARKERS, site_ids=(), scale_prior=tuple(n != "overall" for n in model.scale_param_names),
                    delta_px=10.0, offset_weight=1.0, scale_weight=1.0, smooth_weight=0.0, camera_weight=1.0, points=1,
                    scale_sd=tuple(np.nan_to_num(anthropometry.group_sd(model))),
                    mirror=tuple(map(tuple, anthropometry.mirror_groups(model).tolist())), **kw)


def test_anthropometric_priors_cost_nothing_for_plausible_bodies_and_grow_beyond(model):
    setup = _setup(model, body_weight=1.0)
    names = model.scale_param_names
    sd = anthropometry.group_sd(model)
    pelvis, thigh_r, thigh_l = names.index("pelvis"), names.index("thigh_r"), names.index("thigh_l")

    def cost(**logs):
        x = np.zeros(len(names))
        for name, value in logs.items():
            x[names.index(name)] = value
        return float(losses.sum_of_squares(objective.body_residuals(setup, jnp.asarray(x))))

    # Within 2 SD and 3 % asymmetry: free. 3 SD: one SD beyond, cost ½·1².
    assert cost(pelvis=1.9 * sd[pelvis], overall=0.5) == 0.0
    assert cost(pelvis=-3.0 * sd[pelvis]) == pytest.approx(0.5)
    assert cost(thigh_r=np.log(1.02)) == 0.0
    excess = (np.log(1.08) - np.log(1.03)) / anthropometry.ASYMMETRY_SD
    assert cost(thigh_r=np.log(1.08)) == pytest.approx(0.5 * excess**2)
    assert cost(thigh_r=np.log(1.08), thigh_l=np.log(1.08)) == 0.0
    assert sd[thigh_r] == sd[thigh_l] and np.isnan(sd[names.index("overall")])
    # Freed left/right and a weight of 0: no cost.
    assert float(losses.sum_of_squares(objective.body_residuals(_setup(model, body_weight=0.0), jnp.full(len(names), 1.0)))) == 0.0
    free = dataclasses.replace(setup, mirror=())
    assert float(losses.sum_of_squares(objective.body_residuals(free, jnp.asarray(np.eye(len(names))[thigh_r] * 0.1)))) == 0.0
    # Hard bounds whatever the unconstrained value; 0 stays 0.
    z = jnp.asarray([-50.0, -1.0, 0.0, 1.0, 50.0])
    s = np.exp(np.asarray(anthropometry.bounded_log_scales(z, np.ones(5, bool), jnp)))
    # (within float32's rounding of exp(log(bound)) when x64 is off, as in a test run alone)
    eps = float(np.finfo(np.asarray(z).dtype).eps)
    assert np.all((s >= anthropometry.BOUNDS[0] * (1 - 4 * eps)) & (s <= anthropometry.BOUNDS[1] * (1 + 4 * eps))) and s[2] == 1.0
    assert s[0] == pytest.approx(anthropometry.BOUNDS[0], rel=4 * eps) and s[-1] == pytest.approx(anthropometry.BOUNDS[1], rel=4 * eps)
    assert np.all(np.diff(s) > 0)


def test_implausible_bodies_are_named_in_warnings(model):
    names = model.scale_param_names
    scales = np.ones(len(names))
    assert anthropometry.warnings(model, scales) == []
    scales[names.index("pelvis")] = 1.2  # 3 SD of 6 %
    scales[names.index("arm_r")] = 0.85  # 15 % shorter than the left
    text = anthropometry.warnings(model, scales)
    assert any("'pelvis'" in w and "3.0 standard deviations" in w for w in text)
    assert any("'arm_r'" in w and "'arm_l'" in w and "18 %" in w for w in text)
    assert not any("'thigh_r'" in w for w in text)


def test_hip_joint_centres_far_from_the_hip_keypoints_are_warned_about(model):
    times, coords = synthetic.walking(model, duration=0.5, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set="blazepose33", offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig(n_cameras=4)
    cap = synthetic.capture(model, person, times, coords, rig, "blazepose33", seed=2)

    def result(params):
        trial = TrialResult(name="walk", times=times, coords=coords, trajectory=None, capture=cap)
        return FitResult(model=model, marker_set="blazepose33", trials=(trial,), params=params, rig=rig, initial_rig=rig,
                         loss_history=np.zeros(1))

    assert plausibility.hip_keypoints(model, "blazepose33") is not None
    assert plausibility.hip_width_warning(result(person)) is None
    # The pelvis 30 % wider than the keypoints say, as when marker offsets absorb a wrong pelvis scale.
    wide = BodyParams(jnp.asarray(person.scales).at[model.scale_param_names.index("pelvis")].multiply(1.3), person.offsets)
    assert "hip joint centres" in plausibility.hip_width_warning(result(wide))


# ------------------------------------------------------------------ what a fit writes and how it is scored
def test_opensim_inverse_kinematics_on_a_fit_folder_reproduces_its_motion(model, plain_fit, tmp_path):
    """The folder's .trc names its markers as the .osim beside it does, the .osim's ranges hold
    every frame (here a walker turned 150 degrees, beyond the model's ±90 degrees), and OpenSim's
    InverseKinematicsTool run on the two as written gives back the .mot."""
    osim = pytest.importorskip("opensim")
    yaw = model.coordinate_names.index("pelvis_rotation")
    trial = plain_fit.trials[0]
    coords = trial.coords.copy()
    coords[:, yaw] += np.radians(150.0)
    turned = dataclasses.replace(plain_fit, trials=(dataclasses.replace(trial, coords=coords),))
    folder = fit_output.save(turned, tmp_path / "fit")
    opensim_model = osim.Model(str(folder / "model_scaled.osim"))
    marker_set = opensim_model.getMarkerSet()
    assert set(read_trc(folder / "synthetic_markers.trc").marker_names) <= {marker_set.get(i).getName()
                                                                           for i in range(marker_set.getSize())}
    rotational = [n for n, m in zip(model.coordinate_names, model.coordinate_motion) if m == "rotational"]
    fitted = read_mot(folder / "synthetic.mot")
    internal = fitted.to_internal(rotational)
    coordinate_set = opensim_model.getCoordinateSet()
    for name in model.coordinate_names:
        c = coordinate_set.get(name)
        assert c.getRangeMin() <= internal.column(name).min() and internal.column(name).max() <= c.getRangeMax(), name

    tool = osim.InverseKinematicsTool()
    tool.setModel(opensim_model)
    tool.setMarkerDataFileName(str(folder / "synthetic_markers.trc"))
    tool.setStartTime(float(fitted.times[0]))
    tool.setEndTime(float(fitted.times[-1]))
    tool.setOutputMotionFileName(str(tmp_path / "ik.mot"))
    tool.setResultsDir(str(tmp_path))
    tool.set_accuracy(1e-8)
    assert tool.run()
    solved = read_mot(tmp_path / "ik.mot")
    for name, motion in zip(model.coordinate_names, model.coordinate_motion):
        error = np.max(np.abs(solved.column(name) - fitted.column(name)))
        assert error <= (0.01 if motion == "rotational" else 1e-4), name  # degrees; metres


def test_every_output_is_written_even_when_a_plot_cannot_be_drawn(plain_fit, tmp_path, monkeypatch):
    trial = plain_fit.trials[0]
    cap = trial.capture
    kp, conf = cap.keypoints.copy(), cap.confidence.copy()
    middle = cap.num_frames // 2
    kp[0, middle], conf[0, middle] = np.nan, 0.0  # cam1 sees nobody in the frame the overlay shows
    hidden = Capture(kp, conf, cap.fps, cap.keypoint_names, cap.camera_names, name=cap.name)
    result = dataclasses.replace(plain_fit, trials=(dataclasses.replace(trial, capture=hidden, labelled=None),))
    folder = fit_output.save(result, tmp_path / "hidden")
    report = json.loads((folder / "report.json").read_text())
    assert "plot_failures" not in report and (folder / "plots" / "synthetic_reprojection.png").stat().st_size > 0

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(plots, "joint_curves", broken)
    folder = fit_output.save(result, tmp_path / "broken")
    report = json.loads((folder / "report.json").read_text())
    assert report["plot_failures"] == {"synthetic_joint_angles.png": "RuntimeError: no display"}
    assert any("synthetic_joint_angles.png" in note for note in report["notes"])
    for name in ("synthetic.mot", "synthetic_markers.trc", "model_scaled.xml", "model_scaled.osim", "calibration_refined.toml",
                 "plots/synthetic_reprojection.png", "plots/gc_curve.png", "plots/loss.png"):
        assert (folder / name).stat().st_size > 0, name
    assert not (folder / "plots" / "synthetic_joint_angles.png").exists()


def test_scores_name_their_calibration_and_a_refined_one_says_it_was_adjusted(trial, short_ba_fit, plain_fit, tmp_path):
    m = short_ba_fit.metrics
    assert m["calibration"] == "refined_calibration" and m["min_confidence"] == 0.5
    # Through the calibration as given, every statistic over the detections with confidence >= 0.5.
    scored = short_ba_fit.trials[0].scored
    err = np.linalg.norm(np.asarray(project(trial["rig"], short_ba_fit.markers(0))) - scored.keypoints, axis=-1)
    confident = scored.confidence >= 0.5
    given = m["given_calibration"]
    assert given["gc10"] == pytest.approx(np.mean(err[confident] <= 10.0))
    assert given["median_px"] == pytest.approx(np.median(err[confident]))
    assert given["detections"] == confident.sum()
    cam = m["trials"]["synthetic"]["given_calibration"]["per_camera"]["cam4"]
    assert cam["gc5"] == pytest.approx(np.mean(err[3][confident[3]] <= 5.0))
    assert m["gc5"] == m["refined_calibration"]["gc5"] != given["gc5"]
    folder = fit_output.save(short_ba_fit, tmp_path / "ba")
    meta = tomllib.loads((folder / "calibration_refined.toml").read_text())["metadata"]
    assert meta == {"adjusted": True, "error": pytest.approx(m["refined_calibration"]["median_px"])}
    # Without bundle adjustment there is one calibration, the given one, unadjusted.
    assert plain_fit.metrics["calibration"] == "given_calibration" and "refined_calibration" not in plain_fit.metrics
    folder = fit_output.save(plain_fit, tmp_path / "plain")
    assert tomllib.loads((folder / "calibration_refined.toml").read_text())["metadata"]["adjusted"] is False


def test_a_held_out_camera_is_scored_through_its_calibration_as_given(trial, plain_fit):
    rig, cap = trial["rig"], trial["capture"]
    scores = holdout_scores(plain_fit, rig.subset(["cam8"]), [cap])
    # The fit used cam8 and the calibration as given: its held-out score is its own score.
    assert scores["cameras"] == ["cam8"]
    own = plain_fit.metrics["trials"]["synthetic"]["given_calibration"]["per_camera"]["cam8"]
    held = scores["trials"]["synthetic"]["per_camera"]["cam8"]
    if plain_fit.metrics["trials"]["synthetic"]["detections_relabelled"]["cam8"] == 0:
        assert held == pytest.approx(own, rel=1e-9)  # the same numbers, projected by a one-camera rig
    assert held["gc5"] >= 0.9 and scores["all"]["detections"] == held["detections"]


# ------------------------------------------------------------------ bad cameras
def _gc5_without(result, camera: str) -> float:
    """GC_5 of a fit over every camera but ``camera`` (detections as the fit labelled them)."""
    keep = [i for i, n in enumerate(result.rig.names) if n != camera]
    conf = result.trials[0].scored.confidence[keep]
    return metrics.gc_d(result.reprojection_errors(0)[keep], conf, 5.0)


@pytest.mark.slow
def test_a_camera_that_follows_someone_else_is_rejected_and_costs_the_others_little(model, trial, tmp_path):
    """cam5's detector locks onto a second walker 1.2 m to the side for most of the clip (a
    therapist beside a patient): the fit drops those frames of cam5, reports them, and scores
    on the other cameras within 10 % of a fit that never saw cam5."""
    cap, rig = trial["capture"], trial["rig"]
    times, other = synthetic.walking(model, duration=1.5, fps=30.0, seed=7)
    other[:, model.coordinate_names.index("pelvis_tz")] += 1.2
    second = synthetic.capture(model, synthetic.person(model, seed=7, marker_set=MARKERS), times, other, rig, MARKERS, seed=8)
    c = rig.index("cam5")
    frames = np.arange(5, 41)
    kp, conf = cap.keypoints.copy(), cap.confidence.copy()
    kp[c, frames], conf[c, frames] = second.keypoints[c, frames], second.confidence[c, frames]
    followed = Capture(kp, conf, cap.fps, cap.keypoint_names, cap.camera_names, name=cap.name)
    conf_without = cap.confidence.copy()
    conf_without[c] = 0.0
    without = Capture(np.where(conf_without[..., None] > 0, cap.keypoints, np.nan), conf_without, cap.fps,
                      cap.keypoint_names, cap.camera_names, name=cap.name)
    settings = dict(SETTINGS, steps=1500, bundle_adjust=False)
    bad = fit(model, followed, rig, MARKERS, **settings)
    reference = fit(model, without, rig, MARKERS, **settings)
    rejected = bad.metrics["trials"]["synthetic"]["rejected_frames"]
    seen = [f for f in frames if conf[c, f].max() > 0]
    assert len(set(rejected["cam5"]) & set(seen)) >= 0.9 * len(seen)
    assert set(rejected["cam5"]) <= set(frames)
    assert all(not rejected[n] for n in rig.names if n != "cam5")
    assert _gc5_without(bad, "cam5") >= 0.9 * _gc5_without(reference, "cam5")
    folder = fit_output.save(bad, tmp_path / "followed")
    assert json.loads((folder / "report.json").read_text())["metrics"]["trials"]["synthetic"]["rejected_frames"]["cam5"]


@pytest.mark.slow
def test_a_camera_that_sees_nobody_for_a_while_still_gives_every_output(model, trial, plain_fit, tmp_path):
    cap, rig = trial["capture"], trial["rig"]
    c = rig.index("cam3")
    kp, conf = cap.keypoints.copy(), cap.confidence.copy()
    kp[c, 15:31], conf[c, 15:31] = np.nan, 0.0  # the middle frame among them: the overlay's
    hidden = Capture(kp, conf, cap.fps, cap.keypoint_names, cap.camera_names, name=cap.name)
    result = fit(model, hidden, rig, MARKERS, bundle_adjust=False, **SETTINGS)
    assert _gc5_without(result, "cam3") >= 0.9 * _gc5_without(plain_fit, "cam3")
    folder = fit_output.save(result, tmp_path / "hidden")
    report = json.loads((folder / "report.json").read_text())
    assert "plot_failures" not in report and not report["metrics"]["trials"]["synthetic"]["rejected_frames"]["cam3"]
    for name in ("synthetic.mot", "synthetic_markers.trc", "model_scaled.osim", "plots/synthetic_reprojection.png"):
        assert (folder / name).stat().st_size > 0, name
