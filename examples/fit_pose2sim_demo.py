"""Fit the bundled model to Pose2Sim's real 4-camera BlazePose demo and compare with Pose2Sim.

Data: ../shared/data/pose2sim-demo beside the checkout (see its README): 100 frames at 60 Hz, 33 BlazePose
keypoints per camera, a Qualisys calibration, and Pose2Sim's own triangulated markers. Two
known flaws make it a robustness test: BlazePose swaps left and right in cam02 for frames
41–74, and every camera sits 10–20 px off the others. The fit uses the Huber loss, the
detector's confidences, left/right relabelling (it exchanges back about 440 of cam02's
mirror-pair detections and none in the other cameras) and bundle adjustment (which absorbs
per-camera offsets). The scores below use the keypoints as given, swaps included.

Pose2Sim's markers (``.trc``, Y-up: trc (X, Y, Z) = world (y, z, x)) are reprojected through the
same calibration, so both methods are scored on the same keypoints by GC_5 and per-camera error.

    python examples/fit_pose2sim_demo.py [DATA_FOLDER] [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT = Path("/work/shared/data/pose2sim-demo")
# Pose2Sim marker -> BlazePose keypoint, for the markers both have.
POSE2SIM_TO_BLAZEPOSE = {
    "RHip": "right_hip", "RKnee": "right_knee", "RAnkle": "right_ankle", "RHeel": "right_heel", "RBigToe": "right_foot_index",
    "LHip": "left_hip", "LKnee": "left_knee", "LAnkle": "left_ankle", "LHeel": "left_heel", "LBigToe": "left_foot_index",
    "Nose": "nose", "RShoulder": "right_shoulder", "RElbow": "right_elbow", "RWrist": "right_wrist",
    "LShoulder": "left_shoulder", "LElbow": "left_elbow", "LWrist": "left_wrist",
}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT), help=f"the demo folder (default {DEFAULT})")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="pose2sim_fit", help="output folder")
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
    from mjx_biomech.capture.projection import project
    from mjx_biomech.cli.fit import progress_bars
    from mjx_biomech.fitting.fit import fit

    model = load_model()
    rig = CameraRig.from_toml(data / "calibration.toml")
    capture = Capture.from_npz(data / "keypoints_blazepose.npz", name="pose2sim_demo")
    rig = rig.subset(capture.camera_names)
    with progress_bars() as progress:
        result = fit(model, capture, rig, "blazepose33", representation="spline", solver="adam", steps=args.steps,
                     bundle_adjust=True, progress=progress)
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

    ours = errors(result.rig, result.markers(0)[:, kp_idx])
    ours_fixed_rig = errors(rig, result.markers(0)[:, kp_idx])
    theirs = errors(rig, world[:, trc_idx])
    rows = [("mjx-biomech fit (refined calibration)", ours), ("mjx-biomech fit (given calibration)", ours_fixed_rig),
            ("Pose2Sim triangulation (given calibration)", theirs)]
    print(f"\n{len(common)} keypoints both methods have, {capture.num_frames} frames, {len(rig)} cameras")
    print(f"{'':44s} {'GC_5':>6s}  " + "  ".join(f"{n:>13s}" for n in rig.names))
    for label, err in rows:
        per_cam = "  ".join(f"{np.nanmean(e[c > 0]):5.1f}/{np.nanmedian(e[c > 0]):5.1f} px" for e, c in zip(err, conf))
        print(f"{label:44s} {metrics.gc_d(err, conf, 5.0):6.3f}  {per_cam}")
    print("(per camera: mean/median reprojection error over detected keypoints)")
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
