"""Fitting time on one synthetic capture: LM + spline vs AdamW + MLP vs the two-stage path.

The capture: the bundled model walking 1.5 s at 30 fps in an 8-camera ring, COCO-17 keypoints,
1.5 px noise, 10 % dropouts. Each method runs until it stops improving; the table gives wall
time (first run, compilation included, and a second, compiled run) and the reprojection error
it reaches (median px, GC_5). The speed ratios compare the compiled runs.

The two-stage path is what Pose2Sim/OpenSim do: triangulate the keypoints (robust DLT), then
inverse kinematics frame by frame. OpenSim's IK needs an .osim model with matching markers, so
here IK is scipy.optimize.least_squares on our model (scaled once by the triangulated
size, Jacobians from JAX): the same two-stage idea on the same model.

    python benchmarks/fit.py [--adam-steps N] [--lm-steps N]
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adam-steps", type=int, default=3000)
    parser.add_argument("--lm-steps", type=int, default=30)
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
                                   knots_per_second=8.0, bundle_adjust=False),
        "AdamW + MLP": lambda: fit(model, cap, rig, MARKERS, solver="adam", representation="mlp", steps=args.adam_steps,
                                   lr=3e-3, bundle_adjust=False),
        "AdamW + spline": lambda: fit(model, cap, rig, MARKERS, solver="adam", representation="spline",
                                      steps=args.adam_steps, bundle_adjust=False),
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


if __name__ == "__main__":
    main()
