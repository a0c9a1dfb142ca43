"""Fit the bundled model to Pose2Sim's real 4-camera BlazePose demo and compare with Pose2Sim.

Data: ../shared/data/pose2sim-demo beside the checkout (see its README): 100 frames at 60 Hz, 33 BlazePose
keypoints per camera, a Qualisys calibration, and Pose2Sim's own triangulated markers. Two
known flaws make it a robustness test: BlazePose swaps left and right in cam02 for frames
41–74, and every camera sits 10–20 px off the others. The fit uses the Huber loss, the
detector's confidences, left/right relabelling and bundle adjustment (which absorbs
per-camera offsets).

Both methods are scored the same way, on the 25 keypoints Pose2Sim also has: every detection
with confidence ≥ 0.5 in every camera and frame, as the detector gave it (swaps included),
GC_5 / GC_10 (fraction within 5 / 10 px) and the median error. Ours through the calibration
as given and through the refined one; Pose2Sim's markers (``.trc``, Y-up: trc (X, Y, Z) =
world (y, z, x)) through the calibration as given; and, for scale, free 3D points (each keypoint
triangulated per frame, one outlying view left out where that helps) through each calibration:
about the best any set of points reaches through it.

``--nan-fraction 0.3`` removes that fraction of the detections at random (seeded by
``--nan-seed``) before fitting, and still scores on all of them: the removed ones are real
detections held out. The pelvis heading's span shows whether the fit's start stayed robust.

    python examples/fit_pose2sim_demo.py [DATA_FOLDER] [--steps N] [--out DIR] [--nan-fraction F]
        [--no-bundle-adjust] [--representation spline|mlp] [--solver adam|lm] [--huber-px PX]
        [--knots-per-second K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose2sim-demo"
# Pose2Sim marker -> BlazePose keypoint, for the markers both have.
POSE2SIM_TO_BLAZEPOSE = {
    "RHip": "right_hip", "RKnee": "right_knee", "RAnkle": "right_ankle", "RHeel": "right_heel", "RBigToe": "right_foot_index",
    "LHip": "left_hip", "LKnee": "left_knee", "LAnkle": "left_ankle", "LHeel": "left_heel", "LBigToe": "left_foot_index",
    "Nose": "nose", "REye": "right_eye", "LEye": "left_eye",
    "RShoulder": "right_shoulder", "RElbow": "right_elbow", "RWrist": "right_wrist", "RPinky": "right_pinky",
    "RIndex": "right_index", "RThumb": "right_thumb",
    "LShoulder": "left_shoulder", "LElbow": "left_elbow", "LWrist": "left_wrist", "LPinky": "left_pinky",
    "LIndex": "left_index", "LThumb": "left_thumb",
}  # fmt: skip
MIN_CONFIDENCE = 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT), help="the demo folder")
    parser.add_argument("--steps", type=int, default=None, help="AdamW steps or LM iterations per solve at most (None: fit()'s)")
    parser.add_argument("--solver", choices=("adam", "lm"), default=None, help="None: fit()'s (LM for a spline)")
    parser.add_argument("--out", default="pose2sim_fit", help="output folder")
    parser.add_argument("--representation", choices=("spline", "mlp"), default="spline")
    parser.add_argument("--no-bundle-adjust", action="store_true", help="keep the calibration's extrinsics fixed")
    parser.add_argument("--nan-fraction", type=float, default=0.0, help="fraction of detections removed before fitting")
    parser.add_argument("--nan-seed", type=int, default=0, help="seed of the removed detections")
    parser.add_argument("--body-prior-weight", type=float, default=None, help="anthropometric prior weight (default: fit()'s)")
    parser.add_argument("--huber-px", type=float, default=None, help="Huber threshold, px (default: fit()'s)")
    parser.add_argument("--knots-per-second", type=float, default=None, help="spline knots per second (default: fit()'s)")
    args = parser.parse_args(argv)
    data = Path(args.data)
    needed = [data / "keypoints_blazepose.npz", data / "calibration.toml", data / "pose2sim_baseline" / "Demo_BlazePose_0-99.trc"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"fit_pose2sim_demo: the Pose2Sim demo data is not here (missing {', '.join(missing)}); "
              "pass its folder as the first argument", file=sys.stderr)
        return 2

    from converters import fit_output
    from converters.trc import read_trc
    from mjx_biomech import load_model
    from mjx_biomech.analysis import metrics
    from mjx_biomech.capture.cameras import CameraRig
    from mjx_biomech.capture.captures import Capture
    from mjx_biomech.capture.projection import project, triangulate_robust
    from mjx_biomech.cli.fit import progress_bars
    from mjx_biomech.fitting.fit import fit

    model = load_model()
    rig = CameraRig.from_toml(data / "calibration.toml")
    capture = Capture.from_npz(data / "keypoints_blazepose.npz", name="pose2sim_demo")
    rig = rig.subset(capture.camera_names)
    fitted = capture
    if args.nan_fraction > 0:
        drop = np.random.default_rng(args.nan_seed).random(capture.confidence.shape) < args.nan_fraction
        fitted = Capture(np.where(drop[..., None], np.nan, capture.keypoints), np.where(drop, 0.0, capture.confidence),
                         capture.fps, capture.keypoint_names, capture.camera_names, name=capture.name)
    options = {name: value for name, value in (("body_prior_weight", args.body_prior_weight),
               ("huber_delta_px", args.huber_px), ("knots_per_second", args.knots_per_second)) if value is not None}
    with progress_bars() as progress:
        result = fit(model, fitted, rig, "blazepose33", representation=args.representation, solver=args.solver, steps=args.steps,
                     bundle_adjust=not args.no_bundle_adjust, progress=progress, **options)
    fit_output.save(result, args.out)

    trc = read_trc(data / "pose2sim_baseline" / "Demo_BlazePose_0-99.trc")
    world = trc.positions[..., [2, 0, 1]]  # trc (X, Y, Z) = world (y, z, x)
    common = [m for m in POSE2SIM_TO_BLAZEPOSE if m in trc.marker_names]
    kp_idx = [capture.keypoint_names.index(POSE2SIM_TO_BLAZEPOSE[m]) for m in common]
    trc_idx = [trc.marker_names.index(m) for m in common]
    kp = capture.keypoints[:, :, kp_idx]
    conf = capture.confidence[:, :, kp_idx]

    def errors(rig_used, points):
        uv = np.asarray(project(rig_used, points), float)
        return np.linalg.norm(uv - kp, axis=-1)

    markers = result.markers(0)[:, kp_idx]
    rows = [("ours, calibration as given", errors(rig, markers))]
    if not args.no_bundle_adjust:
        rows.insert(0, ("ours, refined calibration", errors(result.rig, markers)))
    rows.append(("Pose2Sim triangulation, as given", errors(rig, world[:, trc_idx])))
    # What free 3D points reach (no body at all): each keypoint triangulated per frame from the
    # confident views, one outlying view left out where that helps. A fit through a calibration
    # cannot do much better than this through the same calibration.
    weights = np.where(conf >= MIN_CONFIDENCE, conf, 0.0)
    for label, rig_used in ((("free points, refined calibration", result.rig),) if not args.no_bundle_adjust
                            else ()) + (("free points, calibration as given", rig),):
        points, _ = triangulate_robust(rig_used, kp, weights)
        rows.append((label, errors(rig_used, np.asarray(points))))
    print(f"\n{len(common)} keypoints both methods have, {capture.num_frames} frames, {len(rig)} cameras; "
          f"every detection with confidence >= {MIN_CONFIDENCE} as the detector gave it"
          + (f"; the fit saw {1 - args.nan_fraction:.0%} of them (seed {args.nan_seed})" if args.nan_fraction > 0 else ""))
    print(f"{'':36s} {'GC_5':>6s} {'GC_10':>6s} {'median':>7s}  " + "  ".join(f"{n + ' GC_10/med':>17s}" for n in rig.names))
    for label, err in rows:
        confident = conf >= MIN_CONFIDENCE
        per_cam = "  ".join(f"{metrics.gc_d(e, c, 10.0, MIN_CONFIDENCE):6.3f}/{np.median(e[c >= MIN_CONFIDENCE]):5.1f} px"
                            for e, c in zip(err, conf))
        print(f"{label:36s} {metrics.gc_d(err, conf, 5.0, MIN_CONFIDENCE):6.3f} {metrics.gc_d(err, conf, 10.0, MIN_CONFIDENCE):6.3f} "
              f"{np.median(err[confident]):5.1f}px  {per_cam}")
    heading = np.degrees(result.trials[0].coords[:, model.coordinate_names.index("pelvis_rotation")])
    print(f"pelvis_rotation {heading.min():.1f}° to {heading.max():.1f}° (span {np.ptp(heading):.1f}°); "
          f"fit {result.settings['seconds']:.0f} s")
    print("scales: " + ", ".join(f"{n} {s:.3f}" for n, s in zip(model.scale_param_names, np.asarray(result.params.scales))))
    relabelled = result.metrics["trials"][result.trials[0].name]["detections_relabelled"]
    print("detections relabelled (confidence >= 0.5): " + ", ".join(f"{c} {n}" for c, n in relabelled.items()))
    for warning in result.metrics["warnings"]:
        print(f"warning: {warning}")
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
