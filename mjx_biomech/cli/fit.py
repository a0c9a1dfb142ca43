"""``mjx-biomech fit``: fit a scaled body model to multi-camera 2D keypoints and write every output.

:func:`progress_bars` draws a fit's progress (one bar per stage) for this command and ``demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import time
from collections.abc import Iterator
from pathlib import Path

# Seconds between updates of the loss shown beside a bar: reading the loss waits for the device.
_LOSS_EVERY_S = 0.5
# Without a terminal, one line per stage at its start, every tenth of it and its end.
_LOG_STEPS = 10


@contextlib.contextmanager
def progress_bars(console=None) -> Iterator:
    """A ``progress(stage, done, total, info)`` callback for :func:`mjx_biomech.fitting.fit.fit`
    and :func:`mjx_biomech.fitting.population.fit_population` (see
    :mod:`mjx_biomech.fitting.fit`). On a terminal it draws one rich bar per stage on
    ``console`` (default: stderr), with the latest loss, and the bars vanish when the block ends;
    elsewhere (a log file, a pipe) it writes plain lines instead (``stage: done/total loss``),
    without escape sequences."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield _plain_progress(console.file)
        return
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


def _plain_progress(stream):
    """The progress callback for a stream that is not a terminal: a line when a stage starts, at
    every tenth of it and when it ends."""
    started: dict[str, float] = {}

    def progress(stage: str, done: int, total: int, info: dict) -> None:
        if done == 0 or stage not in started:
            started[stage] = time.monotonic()
        tick = max(1, total // _LOG_STEPS)
        if done == 0 or done == total or done % tick == 0:
            loss = f" loss {float(info['loss']):.4g}" if "loss" in info else ""
            print(f"{stage}: {done}/{total}{loss} ({time.monotonic() - started[stage]:.0f} s)", file=stream, flush=True)

    return progress


def _fit_defaults() -> dict:
    """The keyword defaults of :func:`mjx_biomech.fitting.fit.fit`: the command's defaults are the library's."""
    from mjx_biomech.fitting.fit import fit

    return {k: p.default for k, p in inspect.signature(fit).parameters.items() if p.default is not inspect.Parameter.empty}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mjx_biomech.fitting.fit import ADAM_STEPS, LM_ITERATIONS

    d = _fit_defaults()
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--calibration", required=True, help="anipose/Pose2Sim calibration.toml")
    parser.add_argument("--keypoints", required=True, nargs="+",
                        help="capture .npz file(s) (keypoints, confidence, camera_names, keypoint_names, fps); "
                             "several files are trials of one person")
    parser.add_argument("--marker-set", required=True, help="the model's marker set the keypoints follow (e.g. blazepose33)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default=None, help="model (MJCF/.osim path or myo_sim:NAME; default: the bundled model)")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help=f"AdamW steps (None: {ADAM_STEPS}) or LM iterations per solve at most (None: {LM_ITERATIONS}; "
                             "each solve stops once converged)")
    parser.add_argument("--representation", choices=("spline", "mlp"), default=d["representation"],
                        help="joint-angle trajectories: a cubic B-spline (few parameters, any solver) or the paper's "
                             "implicit MLP of time (AdamW only)")
    parser.add_argument("--solver", choices=("adam", "lm"), default=d["solver"],
                        help="Levenberg-Marquardt on every frame (spline only: banded normal equations over the control "
                             "points, any capture length) or AdamW on random frames (any representation); None: lm for "
                             "a spline, adam for the MLP")
    parser.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate at the start")
    parser.add_argument("--no-bundle-adjust", action="store_true", help="keep the calibration's extrinsics fixed")
    parser.add_argument("--holdout-camera", action="append", default=[], metavar="NAME",
                        help="fit without this camera and score it through the calibration as given (repeatable)")
    parser.add_argument("--body-prior-weight", type=float, default=d["body_prior_weight"],
                        help="weight of the anthropometric priors on segment scales (0: off)")
    parser.add_argument("--free-left-right", action="store_true", help="do not tie left and right segment scales")
    parser.add_argument("--huber-px", type=float, default=d["huber_delta_px"],
                        help="Huber threshold of the reprojection residuals, px (also the margin by which a left/right "
                             "exchange must fit better); smaller fits trusted detections tighter (README: the Pose2Sim demo)")
    parser.add_argument("--knots-per-second", type=float, default=d["knots_per_second"],
                        help="spline segments per second of capture; more follow fast limbs closer and cost LM time")
    parser.add_argument("--no-relabel", action="store_true", help="do not exchange left/right detections the model says "
                                                                  "the detector mixed up")
    parser.add_argument("--seed", type=int, default=d["seed"], help="seed of the random frames AdamW draws and of the MLP's weights")
    parser.add_argument("--checkpoint-dir", default=None, help="save the state there and resume from it")
    parser.add_argument("--undetermined", choices=("keep", "tie", "fix"), default=d["undetermined"],
                        help="scale groups the data do not determine (σ > 2 %%): report them only, or fit again with "
                             "each tied to its neighbour (head to torso, one side to the other) or fixed at its prior")


def _without(capture, cameras):
    """``capture`` without the cameras named in ``cameras``."""
    from mjx_biomech.capture.captures import Capture

    keep = [i for i, c in enumerate(capture.camera_names) if c not in cameras]
    return Capture(capture.keypoints[keep], capture.confidence[keep], capture.fps, capture.keypoint_names,
                   [capture.camera_names[i] for i in keep], name=capture.name, start_time=capture.start_time)


def fit_from_args(args: argparse.Namespace, progress=None):
    """The fit the command's ``args`` ask for (inputs read and checked, held-out cameras scored),
    without writing or printing anything: a :class:`~mjx_biomech.analysis.results.FitResult`.
    ``progress`` is :func:`mjx_biomech.fitting.fit.fit`'s callback; ``mjx-biomech batch`` runs
    its markerless subjects through this."""
    import dataclasses

    import mjx_biomech
    from mjx_biomech.analysis.results import holdout_scores
    from mjx_biomech.capture.cameras import CameraRig
    from mjx_biomech.capture.captures import Capture
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.fit import fit

    # Bad input raises InputError, which the command line reports as one line on stderr.
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
    cameras = captures[0].camera_names
    held = list(dict.fromkeys(args.holdout_camera))
    unknown = [c for c in held if c not in cameras]
    if unknown:
        raise InputError(f"--holdout-camera {', '.join(unknown)}: not a camera of the keypoints ({', '.join(cameras)})")
    if len(cameras) - len(held) < 2:
        raise InputError(f"--holdout-camera: {len(cameras) - len(held)} camera(s) would be left; a fit needs at least 2")
    fit_rig = rig.subset([c for c in cameras if c not in held])
    result = fit(model, [_without(c, held) for c in captures], fit_rig, args.marker_set,
                 representation=args.representation, solver=args.solver, steps=args.steps, lr=args.lr,
                 bundle_adjust=not args.no_bundle_adjust, body_prior_weight=args.body_prior_weight,
                 tie_left_right=not args.free_left_right, relabel_left_right=not args.no_relabel, seed=args.seed,
                 huber_delta_px=args.huber_px, knots_per_second=args.knots_per_second,
                 checkpoint_dir=args.checkpoint_dir, progress=progress, undetermined=args.undetermined)
    if held:
        scores = holdout_scores(result, rig.subset(held), captures)
        result = dataclasses.replace(result, metrics={**result.metrics, "holdout": scores})
    return result


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from converters import fit_output

    console = Console()
    with progress_bars() as progress:
        result = fit_from_args(args, progress)
    out = fit_output.save(result, Path(args.out))
    print_summary(console, result)
    console.print(f"outputs in [bold]{out}[/]")
    return 0


def print_summary(console, result) -> None:
    """The reprojection table of a fit (per trial and camera, through each calibration it was
    scored with, relabelled detections counted), the held-out cameras' scores and the warnings."""
    from rich.table import Table

    m = result.metrics
    labels = {"refined_calibration": "refined", "given_calibration": "as given"}
    keys = [k for k in labels if k in m]
    several = len(m["trials"]) > 1
    title = f"reprojection of {result.marker_set}" + ("" if several else f" in {next(iter(m['trials']))}")
    table = Table(title=f"{title}: detections with confidence ≥ {m['min_confidence']:g}, left/right as the fit relabelled them")
    columns = (["trial"] if several else []) + ["camera", "calibration", "GC_5", "GC_10", "median px", "relabelled"]
    for col in columns:
        table.add_column(col, justify="right" if col[0].isupper() or col in ("median px", "relabelled") else "left")

    def cells(s):
        return [f"{s['gc5']:.3f}", f"{s['gc10']:.3f}", "–" if s["median_px"] is None else f"{s['median_px']:.1f}"]

    def row(trial, *rest, end_section=False):
        table.add_row(*(([trial] if several else []) + list(rest)), end_section=end_section)

    for name, trial in m["trials"].items():
        for cam in trial["per_camera"]:
            for k in keys:
                first = k == keys[0]
                row(name if first else "", cam if first else "", labels[k], *cells(trial[k]["per_camera"][cam]),
                    str(trial["detections_relabelled"][cam]) if first else "")
    relabelled = sum(sum(t["detections_relabelled"].values()) for t in m["trials"].values())
    for k in keys:
        row("", "all" if k == keys[0] else "", labels[k], *cells(m[k]), str(relabelled) if k == keys[0] else "",
            end_section=k == keys[-1] and "holdout" in m)
    holdout = m.get("holdout")
    if holdout is not None:
        for name, trial in holdout["trials"].items():
            for cam in holdout["cameras"]:
                row(name, f"{cam} (held out)", labels["given_calibration"], *cells(trial["per_camera"][cam]), "")
    console.print(table)
    for name, trial in m["trials"].items():
        for cam, frames in trial.get("rejected_frames", {}).items():
            if frames:
                console.print(f"rejected: {cam}'s detections in {len(frames)} frame(s) of {name} ({_frame_ranges(frames)}): "
                              "they miss the fitted body by far (someone else?)")
    for warning in m.get("warnings", []):
        console.print(f"[yellow]warning[/]: {warning}")
    print_not_determined(console, result)


def print_not_determined(console, result) -> None:
    """The scale groups (σ > 2 %) and marker offsets (σ > 1 cm) the data do not determine, and
    what the fit did with them (``--undetermined``)."""
    u = result.uncertainty
    if u is None:
        return
    done = result.settings.get("undetermined", {}).get("groups", {})
    for name in u.undetermined_scales:
        console.print(f"[yellow]not determined by the data[/]: scale group {name} (σ {100 * u.scale_sigma[name]:.1f} %)")
    if u.undetermined_markers:
        console.print(f"[yellow]not determined by the data[/]: offsets of {len(u.undetermined_markers)} marker(s) "
                      f"(σ > 1 cm): {', '.join(u.undetermined_markers[:8])}{', ...' if len(u.undetermined_markers) > 8 else ''}")
    for name, target in done.items():
        what = "held at its prior" if target == "prior" else f"tied to {target}"
        sigma = 100 * result.settings["undetermined"]["first_fit_scale_sigma"][name]
        console.print(f"scale group {name} (σ {sigma:.1f} % in a first fit) {what}")


def _frame_ranges(frames) -> str:
    """``[3, 4, 5, 9]`` → ``"3–5, 9"``."""
    runs, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            runs.append(f"{start}–{f}" if f > start else f"{f}")
            start = None
    return ", ".join(runs)
