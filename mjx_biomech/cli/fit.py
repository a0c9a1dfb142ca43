"""``mjx-biomech fit``: fit a scaled body model to multi-camera 2D keypoints and write every output.

:func:`progress_bars` draws a fit's progress (one bar per stage) for this command and ``demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

# Seconds between updates of the loss shown beside a bar: reading the loss waits for the device.
_LOSS_EVERY_S = 0.5


@contextlib.contextmanager
def progress_bars(console=None) -> Iterator:
    """A ``progress(stage, done, total, info)`` callback for :func:`mjx_biomech.fitting.fit.fit`
    and :func:`mjx_biomech.fitting.population.fit_population` (see
    :mod:`mjx_biomech.fitting.fit`) that draws one rich bar per stage on ``console``, with the
    latest loss; the bars vanish when the block ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), console=console, transient=True)
    tasks: dict[str, int] = {}
    shown: dict[str, float] = {}

    def progress(stage: str, done: int, total: int, info: dict) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, completed=done, loss="")
        elif done == 0:
            bars.reset(tasks[stage], total=total, completed=0, loss="")
        now = time.monotonic()
        if "loss" in info and (done == total or now - shown.get(stage, 0.0) >= _LOSS_EVERY_S):
            shown[stage] = now
            bars.update(tasks[stage], completed=done, loss=f"loss {float(info['loss']):.4g}")
        else:
            bars.update(tasks[stage], completed=done)

    with bars:
        yield progress


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
    from converters import fit_output
    from mjx_biomech.capture.cameras import CameraRig
    from mjx_biomech.capture.captures import Capture
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.fit import fit

    # Bad input raises InputError, which the command line reports as one line on stderr.
    console = Console()
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
    with progress_bars(console) as progress:
        result = fit(model, captures, rig, args.marker_set, representation=args.representation, solver=args.solver,
                     steps=args.steps, lr=args.lr, bundle_adjust=not args.no_bundle_adjust, seed=args.seed,
                     checkpoint_dir=args.checkpoint_dir, progress=progress)
    out = fit_output.save(result, Path(args.out))
    table = Table(title=f"reprojection ({result.marker_set})")
    for col in ("camera", "mean px", "median px", "GC_5"):
        table.add_column(col, justify="right")
    for trial in result.metrics["trials"].values():
        for cam, m in trial["per_camera"].items():
            table.add_row(cam, f"{m['mean_px']:.1f}", f"{m['median_px']:.1f}", f"{m['gc5']:.3f}")
    console.print(table)
    console.print(f"GC_5 {result.metrics['gc5']:.3f}, σ_NIQR {result.metrics['sigma_niqr_px']:.2f} px; outputs in [bold]{out}[/]")
    return 0
