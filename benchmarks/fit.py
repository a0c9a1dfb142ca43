"""Fitting time on one synthetic capture: LM + spline vs AdamW + MLP vs the two-stage path.

The capture: the bundled model walking 1.5 s at 30 fps in an 8-camera ring, COCO-17 keypoints,
1.5 px noise, 10 % dropouts. Each method runs until it stops improving (LM: until an iteration
lowers the objective by less than 1e-6 of it, at most ``--lm-steps``; AdamW: its schedule of
``--adam-steps``); the table gives wall time (first run, compilation included, and a second,
compiled run) and the reprojection error it reaches (median px, GC_5). The speed ratios compare
the compiled runs. Then the LM on a 10 s, 8-camera ``bml_movi_87`` capture (87 keypoints, 300
frames), compiled run, and the memory one LM iteration needs on 2.5, 5 and 10 s of it (XLA's accounting
of the compiled programs: arguments, outputs, temporaries).

The two-stage path is what Pose2Sim/OpenSim do: triangulate the keypoints (robust DLT), then
inverse kinematics frame by frame. OpenSim's IK needs an .osim model with matching markers, so
here IK is scipy.optimize.least_squares on our model (scaled once by the triangulated
size, Jacobians from JAX): the same two-stage idea on the same model.

    python benchmarks/fit.py [--adam-steps N] [--lm-steps N]

The last line: ``lm_vs_adam_time=<LM compiled s / AdamW + spline compiled s> lm_median_px=<>
adam_median_px=<> ten_second_fit_s=<>``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares

import mjx_biomech
from mjx_biomech.analysis import metrics
from mjx_biomech.capture import synthetic
from mjx_biomech.capture.projection import project, triangulate_robust
from mjx_biomech.fitting import initialisation, trajectories
from mjx_biomech.fitting.solvers import spline_lm
from mjx_biomech.fitting.fit import fit

MARKERS = "coco17"


def _score(rig, points, capture):
    err = np.linalg.norm(np.asarray(project(rig, points), float) - capture.keypoints, axis=-1)
    seen = capture.confidence > 0
    return float(np.nanmedian(err[seen])), metrics.gc_d(np.where(seen, err, np.nan), capture.confidence, 5.0)


def two_stage(model, capture, rig):
    """Triangulate, then per-frame least-squares IK (warm-started from the previous frame)."""
    pts, _ = triangulate_robust(rig, capture.keypoints, capture.confidence)
    pts = np.asarray(pts, float)
    guess = initialisation.initial_root(model, capture, rig, MARKERS)
    params = model.scale_params(overall=guess.scale)
    active = np.flatnonzero(trajectories.observed_coordinates(model, MARKERS) | trajectories.root_coordinates(model))
    base = jnp.asarray(model.neutral_coordinates())
    markers = jax.jit(lambda qa: model.markers(base.at[active].set(qa), params, MARKERS))
    jac = jax.jit(jax.jacfwd(lambda qa: model.markers(base.at[active].set(qa), params, MARKERS)))
    root = trajectories.root_coordinates(model)[active]
    lo, hi = model.coordinate_ranges[active].T
    lo, hi = np.where(root, -np.inf, lo), np.where(root, np.inf, hi)
    coords = np.tile(model.neutral_coordinates(), (capture.num_frames, 1))
    margin = 1e-6
    q = np.clip(trajectories.fill_missing(capture.times, guess.coords)[0, active], lo + margin, hi - margin)
    for f in range(capture.num_frames):
        ok = np.all(np.isfinite(pts[f]), axis=1)
        if ok.sum() < 3:
            continue
        sol = least_squares(
            lambda x: (np.asarray(markers(jnp.asarray(x)))[ok] - pts[f, ok]).ravel(), q,
            jac=lambda x: np.asarray(jac(jnp.asarray(x)))[ok].reshape(-1, len(active)),
            bounds=(lo, hi), method="trf", max_nfev=50,
        )
        q = np.clip(sol.x, lo + margin, hi - margin)
        coords[f, active] = q
    out = jax.jit(jax.vmap(lambda c: model.markers(c, params, MARKERS)))(jnp.asarray(coords))
    return np.asarray(out, float)


def _capture(model, marker_set: str, duration: float):
    times, coords = synthetic.walking(model, duration=duration, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set=marker_set, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig()
    return rig, synthetic.capture(model, person, times, coords, rig, marker_set, seed=2)


def _long_fit(model, cap, rig, steps: int):
    return fit(model, cap, rig, "bml_movi_87", solver="lm", steps=steps, bundle_adjust=False, uncertainty=False)


def _iteration_mb(model, duration: float) -> float:
    """Device memory (MB) of one LM iteration on ``duration`` s of the long capture: XLA's
    accounting of the compiled programs (:func:`spline_lm.iteration_bytes`), on the problem the
    fit hands its solver (recorded by wrapping the solver for one iteration)."""
    seen = []
    solver = spline_lm.spline_levenberg_marquardt

    def record(*a, **k):
        seen.append((a, k))
        return solver(*a, **k)

    spline_lm.spline_levenberg_marquardt = record
    try:
        rig, cap = _capture(model, "bml_movi_87", duration)
        fit(model, cap, rig, "bml_movi_87", solver="lm", steps=1, bundle_adjust=False, uncertainty=False,
            relabel_left_right=False)
    finally:
        spline_lm.spline_levenberg_marquardt = solver
    a, k = seen[0]
    return spline_lm.iteration_bytes(*a[:7], assemble=k.get("assemble")) / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adam-steps", type=int, default=3000)
    parser.add_argument("--lm-steps", type=int, default=50)
    args = parser.parse_args(argv)
    model = mjx_biomech.load_model()
    times, coords = synthetic.walking(model, duration=1.5, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set=MARKERS, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig()
    cap = synthetic.capture(model, person, times, coords, rig, MARKERS, seed=2)
    truth = np.asarray(jax.jit(jax.vmap(lambda c: model.markers(c, person, MARKERS)))(jnp.asarray(coords)), float)
    rows = [("ground truth markers", 0.0, 0.0, *_score(rig, truth, cap))]
    runs = {
        "LM + spline": lambda: fit(model, cap, rig, MARKERS, solver="lm", representation="spline", steps=args.lm_steps,
                                   bundle_adjust=False, uncertainty=False),
        "AdamW + MLP": lambda: fit(model, cap, rig, MARKERS, solver="adam", representation="mlp", steps=args.adam_steps,
                                   lr=3e-3, bundle_adjust=False, uncertainty=False),
        "AdamW + spline": lambda: fit(model, cap, rig, MARKERS, solver="adam", representation="spline",
                                      steps=args.adam_steps, bundle_adjust=False, uncertainty=False),
    }
    for label, run in runs.items():
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = run()
        second = time.perf_counter() - t0
        rows.append((label, first, second, *_score(rig, res.markers(0), cap)))
    t0 = time.perf_counter()
    two_stage(model, cap, rig)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    pts = two_stage(model, cap, rig)
    rows.append(("two-stage: triangulate + scipy IK", first, time.perf_counter() - t0, *_score(rig, pts, cap)))
    ref = rows[1][2]
    print(f"{'method':36s} {'first run s':>11s} {'compiled s':>10s} {'vs LM':>6s} {'median px':>9s} {'GC_5':>6s}")
    for label, first, second, med, gc in rows:
        ratio = f"{second / ref:6.2f}" if second else "     -"
        print(f"{label:36s} {first:11.1f} {second:10.1f} {ratio} {med:9.2f} {gc:6.3f}")
    print(f"device: {jax.devices()[0].device_kind}; float{'64' if jax.config.jax_enable_x64 else '32'}")

    # The capture is made once, outside the timing: only the fit is timed (its start included).
    rig10, cap10 = _capture(model, "bml_movi_87", 10.0)
    _long_fit(model, cap10, rig10, args.lm_steps)  # compile
    t0 = time.perf_counter()
    res = _long_fit(model, cap10, rig10, args.lm_steps)
    ten = time.perf_counter() - t0
    med10, gc10 = _score(rig10, res.markers(0), cap10)
    iterations = len(res.loss_history)
    print(f"10 s, 8 cameras, bml_movi_87 (300 frames): LM + spline {ten:.1f} s compiled ({iterations} accepted steps), "
          f"median {med10:.2f} px, GC_5 {gc10:.3f}")
    for duration in (2.5, 5.0, 10.0):
        print(f"memory of one LM iteration, {duration:4.1f} s capture: {_iteration_mb(model, duration):7.1f} MB")
    lm_row = next(r for r in rows if r[0] == "LM + spline")
    adam_row = next(r for r in rows if r[0] == "AdamW + spline")
    print(f"lm_vs_adam_time={lm_row[2] / adam_row[2]:.3f} lm_median_px={lm_row[3]:.3f} adam_median_px={adam_row[3]:.3f} "
          f"ten_second_fit_s={ten:.2f}")


if __name__ == "__main__":
    main()
