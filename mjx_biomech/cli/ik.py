"""``mjx-biomech ik``: marker-based inverse kinematics, a drop-in for OpenSim's InverseKinematicsTool.

Reads a model (.osim, MJCF or ``myo_sim:NAME``), a .trc and optionally an OpenSim ``Setup_IK.xml``
(task weights, coordinate tasks, time range, accuracy), and writes ``<trial>.mot``,
``<trial>_marker_errors.sto``, ``report.json`` and plots into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model: .osim, MJCF .xml or myo_sim:NAME")
    parser.add_argument("trc", help="marker trajectories (.trc, mm or m)")
    parser.add_argument("--setup", default=None,
                        help="OpenSim Setup_IK.xml: marker and coordinate tasks, time range, accuracy")
    parser.add_argument("--out", default=None, help="output folder (default: <trial>_ik)")
    parser.add_argument("--compare", default=None, metavar="REF.mot",
                        help="a reference .mot (e.g. OpenSim's IK) to compare with and plot beside the result")
    parser.add_argument("--marker-set", default=None,
                        help="the model's marker set whose names the .trc uses (default: the model's site names, "
                             "for a converted .osim its markers)")
    parser.add_argument("--accuracy", type=float, default=None,
                        help="convergence tolerance per coordinate, rad or m (default: the setup's, else 1e-5)")
    parser.add_argument("--time-range", type=float, nargs=2, default=None, metavar=("START", "END"),
                        help="seconds (default: the setup's, else the whole trial)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    import mjx_biomech
    from converters import ik_output, opensim_setup
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.ik import solve_ik

    console = Console()
    model = mjx_biomech.load_model(args.model)
    trial = opensim_setup.read_marker_trial(args.trc)
    setup = opensim_setup.read_ik_setup(args.setup) if args.setup else None
    if args.marker_set is not None and args.marker_set not in model.marker_sets:
        raise InputError(f"--marker-set {args.marker_set!r}: the model has marker sets {sorted(model.marker_sets)}")
    time_range = args.time_range or (setup.time_range if setup else (-float("inf"), float("inf")))
    trial = trial.window(*time_range)
    accuracy = args.accuracy or (setup.accuracy if setup else 1e-5)
    weights = targets = None
    if setup is not None:
        weights = opensim_setup.marker_weights(setup, model.marker_names(args.marker_set), trial)
        targets = opensim_setup.coordinate_targets(setup, model, trial.times)

    with Progress(TextColumn("[bold]IK[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(trial.name, total=trial.num_frames)
        result = solve_ik(model, trial, marker_set=args.marker_set, marker_weights=weights,
                          coordinate_targets=targets or (), accuracy=accuracy,
                          progress=lambda stage, done, total, info: bar.update(task, completed=done))
    out = Path(args.out or f"{trial.name}_ik")
    settings = {"model": str(args.model), "trc": str(args.trc), "setup": args.setup, "marker_set": args.marker_set,
                "accuracy": accuracy, "time_range_s": [float(trial.times[0]), float(trial.times[-1])]}
    written = ik_output.write_ik_outputs(out, [result], settings, reference=args.compare)

    report = ik_output.marker_report(result)
    table = Table(title=f"IK of {trial.name} ({trial.num_frames} frames)")
    for col in ("marker", "weight", "RMS mm", "max mm"):
        table.add_column(col, justify="right")
    for name, m in report["markers"].items():
        rms = "–" if m["rms_m"] is None else f"{1000 * m['rms_m']:.1f}"
        peak = "–" if m["max_m"] is None else f"{1000 * m['max_m']:.1f}"
        table.add_row(name, f"{m['weight']:g}", rms, peak)
    console.print(table)
    if result.skipped_markers:
        console.print(f"[yellow]skipped (not in {Path(args.trc).name}):[/] {', '.join(result.skipped_markers)}")
    if not result.converged.all():
        console.print(f"[yellow]{int((~result.converged).sum())} frame(s) did not converge to {accuracy:g}[/]")
    console.print(
        f"marker RMS {1000 * report['marker_rms_m']:.2f} mm, max {1000 * report['marker_max_m']:.1f} mm; "
        f"{report['iterations']['mean']:.1f} iterations/frame; {report['frames_per_second']:.0f} frames/s "
        f"(compile {result.compile_seconds:.1f} s); outputs in [bold]{out}[/] ({len(written)} files)")
    return 0
