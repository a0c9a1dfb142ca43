"""Standard errors of markerless fits: the structured covariance against its dense oracle, its
calibration on synthetic truth, its response to missing views, and what a fit writes and does
with the scales the data do not determine.

The synthetic capture is tiny (0.4 s at 30 fps, 4 cameras, the 17 COCO keypoints) and its true
motion is a spline of the fit's own knots, so the estimator has no representation error. Its
true marker offsets are 0 and held by a strong prior: the calibration then checks the poses and
scales, the parameters the data determine.
"""

import dataclasses
import io
import json

import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

import mjx_biomech
from converters import fit_output
from converters.mot import read_mot
from mjx_biomech.capture import synthetic
from mjx_biomech.capture.captures import Capture
from mjx_biomech.cli.fit import print_summary
from mjx_biomech.fitting import anthropometry, trajectories, uncertainty
from mjx_biomech.fitting.bundle_adjustment import joint_bundle_adjustment
from mjx_biomech.fitting.fit import _refit_undetermined, fit
from mjx_biomech.fitting.solvers import schur_lm
from mjx_biomech.fitting.variables import FitSetup, FitVariables, TrialArrays

MARKERS = "coco17"
CAMERAS = 4


@pytest.fixture(scope="module")
def problem():
    model = mjx_biomech.load_model()
    times, coords = synthetic.walking(model, duration=0.4, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set=MARKERS, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig(n_cameras=CAMERAS)
    active = trajectories.observed_coordinates(model, MARKERS) | trajectories.root_coordinates(model)
    cmap = trajectories.coordinate_map(model, t0=float(times[0]), active=active)
    truth_traj = trajectories.spline_from_coords(cmap, times, coords, 12.0, jnp.float64)
    setup = FitSetup(
        model=model, marker_set=MARKERS, site_ids=tuple(int(i) for i in model.marker_site_ids(MARKERS)),
        scale_prior=tuple(n != "overall" for n in model.scale_param_names), delta_px=10.0, offset_weight=100.0,
        scale_weight=1.0, smooth_weight=0.0, camera_weight=1.0 / len(times), points=300,
        scale_sd=tuple(float(x) for x in np.nan_to_num(anthropometry.group_sd(model), nan=0.0)),
        mirror=tuple(map(tuple, anthropometry.mirror_groups(model).tolist())), body_weight=100.0,
    )
    # The fit's unconstrained log scales of the true person (the inverse of the bounding squeeze).
    mid, half, shift = anthropometry._squeeze_constants()
    logs = np.log(np.asarray(person.scales))
    raw = np.where(setup.scale_prior, shift + half * np.arctanh((logs - mid) / half), logs)
    v = FitVariables((truth_traj,), jnp.asarray(raw), jnp.zeros((len(setup.site_ids), 3)), jnp.zeros((CAMERAS, 6)))
    return {"model": model, "times": times, "truth": np.asarray(truth_traj(jnp.asarray(times))), "person": person,
            "rig": rig, "setup": setup, "v": v, "cmap": cmap,
            "true_scales": np.asarray(uncertainty.effective_log_scales(model, jnp.asarray(logs)))}


def _capture(p, seed, blank=None):
    """A noisy capture of the true motion (1.5 px, 10 % dropouts); ``blank``: (camera, frames) unseen."""
    cap = synthetic.capture(p["model"], p["person"], p["times"], p["truth"], p["rig"], MARKERS, noise_px=1.5,
                            dropout=0.1, outlier_fraction=0.0, seed=100 + seed)
    if blank is not None:
        cam, frames = blank
        conf, kp = cap.confidence.copy(), cap.keypoints.copy()
        conf[cam, frames] = 0.0
        kp[cam, frames] = np.nan
        cap = dataclasses.replace(cap, confidence=conf, keypoints=kp)
    return cap


def _trials(cap):
    return (TrialArrays.from_capture(cap, jnp.float64),)


def test_structured_covariances_equal_the_dense_inverse_and_the_spline_smoother():
    """Oracle: the dense inverse of the whole arrow-shaped normal matrix and the spline's hat
    matrix applied to the dense per-frame covariance."""
    rng = np.random.default_rng(0)
    F, nq, n_p = 15, 3, 4
    Jq = rng.normal(size=(F, 6, nq))
    Jp = rng.normal(size=(F, 6, n_p))
    A = np.einsum("fri,frj->fij", Jq, Jq)
    B = np.einsum("fri,frj->fij", Jq, Jp)
    C = np.einsum("fri,frj->ij", Jp, Jp) + np.eye(n_p)
    eq = schur_lm.NormalEquations(jnp.asarray(A), jnp.asarray(B), jnp.zeros((F, nq)), jnp.asarray(C), jnp.zeros(n_p),
                                  jnp.asarray(0.0))
    cov_p, a_inv, w = (np.asarray(x) for x in schur_lm.marginal_covariances(eq))
    N = np.zeros((F * nq + n_p,) * 2)
    for f in range(F):
        N[f * nq:(f + 1) * nq, f * nq:(f + 1) * nq] = A[f]
        N[f * nq:(f + 1) * nq, F * nq:] = B[f]
        N[F * nq:, f * nq:(f + 1) * nq] = B[f].T
    N[F * nq:, F * nq:] = C
    dense = np.linalg.inv(N)
    np.testing.assert_allclose(cov_p, dense[F * nq:, F * nq:], rtol=1e-8, atol=1e-12)
    cov_u = a_inv.reshape(F, nq, nq)
    block = np.stack([dense[f * nq:(f + 1) * nq, f * nq:(f + 1) * nq] for f in range(F)])
    np.testing.assert_allclose(cov_u + np.einsum("fap,pq,fbq->fab", w, cov_p, w), block, rtol=1e-8, atol=1e-12)

    # The spline through the per-frame values: diag(H Cov(u) Hᵀ), H its least-squares hat matrix.
    times = np.linspace(0.0, 1.0, F)
    traj = trajectories.SplineTrajectory(cmap=None, control=jnp.zeros((6, nq)), t_start=0.0, t_end=1.0)
    seen = np.ones((F, nq), bool)
    seen[4:7, 1] = False  # a coordinate unseen in some frames: the spline follows the others
    var = uncertainty._spline_variance(traj, times, np.diagonal(a_inv, axis1=1, axis2=2), seen, w,
                                       np.linalg.cholesky(cov_p))
    basis = trajectories.SplineTrajectory.basis_matrix(times, 6, 0.0, 1.0)
    U = dense[:F * nq, :F * nq]
    for c in range(nq):
        s = seen[:, c]
        H = np.zeros((F, F))
        H[:, s] = basis @ np.linalg.solve(basis[s].T @ basis[s] + 1e-6 * np.eye(6), basis[s].T)
        idx = np.arange(F) * nq + c
        np.testing.assert_allclose(var[:, c], np.diagonal(H @ U[np.ix_(idx, idx)] @ H.T), rtol=1e-6)


def _group(name):
    if name.startswith("pelvis"):
        return "pelvis"
    return next((g for g in ("hip", "knee", "ankle", "subtalar", "mtp", "lumbar", "arm", "elbow", "pro_sup", "wrist")
                 if name.startswith(g)), "other")


@pytest.mark.slow
def test_standard_errors_cover_the_true_joint_angles_and_scales_at_their_nominal_rate(problem):
    """Over 20 noise seeds the bundle adjustment (from the truth, to convergence: the estimator
    whose σ is reported) lands within ±1.96 σ of the true joint angle in 90–98 % of (frame,
    coordinate) pairs, and of the true scale of every identifiable group about as often."""
    p = problem
    model, names = p["model"], p["model"].coordinate_names
    lo, hi = model.coordinate_ranges.T
    bounded = np.asarray(p["cmap"].bounded)
    frac = (p["truth"] - lo) / np.where(bounded, hi - lo, 1.0)
    # The fit's splines keep bounded coordinates 3 % of their range inside it; a truth at the
    # bound is not what the estimator can reach, so those frames are not counted.
    counted_base = np.where(bounded, (frac > 0.05) & (frac < 0.95), True)
    inside = np.zeros(len(names))
    counted = np.zeros(len(names))
    scale_in = scale_n = 0
    for seed in range(20):
        trials = _trials(_capture(p, seed))
        v = joint_bundle_adjustment(p["v"], p["setup"], p["rig"], trials, 30, free_cameras=False)
        u = uncertainty.fit_uncertainty(v, p["setup"], p["rig"], trials, free_cameras=False)
        std = u.coordinate_std[0]
        est = np.asarray(v.trajectories[0](jnp.asarray(p["times"])))
        ok = counted_base & (std > 0) & np.isfinite(std)
        inside += (ok & (np.abs(est - p["truth"]) <= 1.96 * std)).sum(0)
        counted += ok.sum(0)
        eff = np.asarray(uncertainty.effective_log_scales(model, v.scale_logs(p["setup"])))
        sigma = np.array([u.scale_sigma[n] for n in model.scale_param_names])
        determined = np.array([n not in u.undetermined_scales for n in model.scale_param_names])
        scale_in += int(((np.abs(eff - p["true_scales"]) <= 1.96 * sigma) & determined).sum())
        scale_n += int(determined.sum())
    groups = {}
    for i, n in enumerate(names):
        g = groups.setdefault(_group(n), [0.0, 0.0])
        g[0] += inside[i]
        g[1] += counted[i]
    by_group = {g: round(a / b, 3) for g, (a, b) in groups.items() if b}
    coverage = inside.sum() / counted.sum()
    assert counted.sum() > 20 * 200
    assert 0.90 <= coverage <= 0.98, (coverage, by_group)
    assert scale_n >= 20 * 8
    assert 0.88 <= scale_in / scale_n <= 1.0, (scale_in, scale_n)


def test_standard_errors_grow_where_a_camera_is_blanked_and_when_a_camera_is_dropped(problem):
    p = problem
    setup, rig, v = p["setup"], p["rig"], p["v"]
    active = np.asarray(p["cmap"].active)
    base = uncertainty.fit_uncertainty(v, setup, rig, _trials(_capture(p, 0)), free_cameras=False).coordinate_std[0]
    blanked_frames = np.arange(4, 9)
    blank = uncertainty.fit_uncertainty(v, setup, rig, _trials(_capture(p, 0, (1, blanked_frames))),
                                        free_cameras=False).coordinate_std[0]
    # Every camera but one sees every frame: the same problem with one camera's view gone.
    dropped = uncertainty.fit_uncertainty(v, setup, rig, _trials(_capture(p, 0, (1, np.arange(len(p["times"]))))),
                                          free_cameras=False).coordinate_std[0]
    ratio = blank[:, active] / base[:, active]
    assert np.all(ratio >= 1 - 1e-9)
    assert np.median(ratio[blanked_frames]) > 1.1
    # The spline spreads a frame's information over its neighbours: far from the gap, σ moves less.
    assert np.median(ratio[[0, -1]]) < np.median(ratio[blanked_frames])
    drop = dropped[:, active] / base[:, active]
    assert np.all(drop >= 1 - 1e-9)
    assert np.median(drop) > 1.1
    # Dropping the camera raises σ more than blanking it for a few frames, everywhere.
    assert np.median(drop[blanked_frames]) >= np.median(ratio[blanked_frames]) - 1e-9


@pytest.fixture(scope="module")
def headless_fit(problem):
    """A short fit of the tiny capture whose head keypoints (nose, eyes, ears) no camera saw:
    the head's scale is left to its prior."""
    p = problem
    cap = _capture(p, 0)
    head = [i for i, n in enumerate(cap.keypoint_names) if n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
    conf, kp = cap.confidence.copy(), cap.keypoints.copy()
    conf[:, :, head] = 0.0
    kp[:, :, head] = np.nan
    cap = Capture(kp, conf, cap.fps, cap.keypoint_names, cap.camera_names, name="walk")
    settings = {"solver": "adam", "representation": "spline", "steps": 300, "lr": 3e-2, "bundle_adjust": True,
                "ba_start_fraction": 0.7, "ba_iterations": 5, "offset_weight": 100.0, "relabel_left_right": False}
    result = fit(p["model"], cap, p["rig"], MARKERS, **settings)
    return {"result": result, "refit": lambda m: fit(m, cap, p["rig"], MARKERS, **settings)}


@pytest.mark.slow
def test_a_fit_writes_standard_errors_opensim_reads_and_flags_what_the_data_do_not_determine(headless_fit, tmp_path):
    result = headless_fit["result"]
    u = result.uncertainty
    assert "head" in u.undetermined_scales and "torso" not in u.undetermined_scales
    assert u.camera_sigma is not None and u.camera_sigma["cam1"]["rotation_deg"] == 0.0
    assert all(0 < c["centre_mm"] < 50 for n, c in u.camera_sigma.items() if n != "cam1")
    folder = fit_output.save(result, tmp_path / "out")
    report = json.loads((folder / "report.json").read_text())
    assert set(report["uncertainty"]) >= {"scale_sigma_pct", "offset_sigma_mm", "camera_sigma", "coordinate_std_median",
                                          "not_determined", "noise_px", "seconds"}
    assert "head" in report["uncertainty"]["not_determined"]["scales"]
    assert 1.0 < report["uncertainty"]["noise_px"] < 2.0
    std = read_mot(folder / "walk_std.sto")
    motion = read_mot(folder / "walk.mot")
    assert std.names == motion.names and len(std.times) == len(motion.times)
    knee = result.model.coordinate_names.index("knee_angle_r")
    np.testing.assert_allclose(std.column("knee_angle_r"), np.degrees(result.trials[0].coords_std[:, knee]), rtol=1e-6)
    assert (folder / "plots" / "walk_joint_angles.png").exists()
    printed = io.StringIO()
    print_summary(Console(file=printed, width=200), result)
    assert "not determined by the data: scale group head" in printed.getvalue()


@pytest.mark.slow
def test_undetermined_groups_fixed_stay_at_the_prior_and_tied_ones_equal_their_neighbour(headless_fit):
    first = headless_fit["result"]
    names = first.model.scale_param_names
    fixed = _refit_undetermined(first, "fix", headless_fit["refit"])
    scales = dict(zip(names, np.asarray(fixed.params.scales)))
    assert scales["head"] == 1.0 and fixed.uncertainty.scale_sigma["head"] == 0.0
    assert fixed.settings["undetermined"]["groups"]["head"] == "prior"
    tied = _refit_undetermined(first, "tie", headless_fit["refit"])
    scales = dict(zip(names, np.asarray(tied.params.scales)))
    assert scales["head"] == scales["torso"]
    assert tied.uncertainty.scale_sigma["head"] == tied.uncertainty.scale_sigma["torso"] <= 0.02
    assert tied.model is first.model
    bodies = np.asarray(tied.model.body_scales(tied.params))
    body = tied.model.body_names.index
    np.testing.assert_allclose(bodies[body("head")], bodies[body("torso")])
