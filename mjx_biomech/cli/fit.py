"""``mjx-biomech fit``: fit a scaled body model to multi-camera 2D keypoints and write every output."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration", required=True, help="anipose/Pose2Sim calibration.toml")
    parser.add_argument("--keypoints", required=True, nargs="+",
                        help="capture .npz file(s) (keypoints, confidence, camera_names, keypoint_names, fps); "
                             "several files are trials of one person")
    parser.add_argument("--marker-set", required=True, help="the model's marker set the keypoints follow (e.g. blazepose33)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default=None, help="model (MJCF/.osim path or myo_sim:NAME; default: the bundled model)")
    parser.add_argument("--steps", type=int, default=4000, help="optimiser steps (LM: iterations)")
    parser.add_argument("--representation", choices=("spline", "mlp"), default="spline")
    parser.add_argument("--solver", choices=("adam", "lm"), default="adam")
    parser.add_argument("--lr", type=float, default=3e-2, help="AdamW learning rate at the start")
    parser.add_argument("--no-bundle-adjust", action="store_true", help="keep the calibration's extrinsics fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None, help="save the state there and resume from it")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import mjx_biomech
    from mjx_biomech.capture.cameras import CameraRig
    from mjx_biomech.capture.captures import Capture
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.fit import fit

    console = Console()
    try:
        model = mjx_biomech.load_model(args.model)
        rig = CameraRig.from_toml(args.calibration)
        captures = [Capture.from_npz(p) for p in args.keypoints]
        if args.marker_set not in model.marker_sets:
            raise InputError(f"--marker-set {args.marker_set!r}: the model has marker sets {sorted(model.marker_sets)}")
        # Fit with the calibration's cameras that the keypoints have; an unknown camera is an error.
        for cap in captures:
            missing = [c for c in cap.camera_names if c not in rig.names]
            if missing:
                raise InputError(f"{cap.name}: camera(s) {', '.join(missing)} not in the calibration {args.calibration} "
                                 f"(its cameras: {', '.join(rig.names)})")
        rig = rig.subset(captures[0].camera_names)
        result = fit(model, captures, rig, args.marker_set, representation=args.representation, solver=args.solver,
                     steps=args.steps, lr=args.lr, bundle_adjust=not args.no_bundle_adjust, seed=args.seed,
                     checkpoint_dir=args.checkpoint_dir)
    except InputError as e:
        console.print(f"[red]mjx-biomech fit: {e}[/]")
        return 2
    out = result.save(Path(args.out))
    table = Table(title=f"reprojection ({result.marker_set})")
    for col in ("camera", "mean px", "median px", "GC_5"):
        table.add_column(col, justify="right")
    for trial in result.metrics["trials"].values():
        for cam, m in trial["per_camera"].items():
            table.add_row(cam, f"{m['mean_px']:.1f}", f"{m['median_px']:.1f}", f"{m['gc5']:.3f}")
    console.print(table)
    console.print(f"GC_5 {result.metrics['gc5']:.3f}, σ_NIQR {result.metrics['sigma_niqr_px']:.2f} px; outputs in [bold]{out}[/]")
    return 0
