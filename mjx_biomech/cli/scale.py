"""``mjx-biomech scale``: scale a model to a person's markers, a drop-in for OpenSim's ScaleTool.

Reads a model (.osim, MJCF, ``myo_sim:NAME``; the bundled model by default), a static trial and
optionally motion trials (.trc), an OpenSim marker set attached by body name, an OpenSim
``Setup_Scale.xml`` (model, marker set, static trial and its time range, task weights, mass) and
a ``Setup_IK.xml`` for the motion trials' tasks; fits segment scales and marker offsets to every
trial at once (:func:`mjx_biomech.fitting.markers.fit_markers`) and writes the scaled
``model_scaled.osim`` and ``model_scaled.xml``, IK of every trial, ``report.json`` and plots into
``--out`` (:mod:`converters.scale_output`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="model: .osim, MJCF .xml or myo_sim:NAME (default: the setup's, else the bundled model)")
    parser.add_argument("--static", default=None, help="static trial (.trc; default: the setup's marker_file)")
    parser.add_argument("--trials", nargs="*", default=[], metavar="TRC", help="motion trials, scaled with and IK'd")
    parser.add_argument("--markers", default=None, metavar="MarkerSet.xml",
                        help="OpenSim marker set attached by body name (default: the setup's marker_set_file)")
    parser.add_argument("--setup", default=None, metavar="Setup_Scale.xml", help="OpenSim ScaleTool setup")
    parser.add_argument("--ik-setup", default=None, metavar="Setup_IK.xml",
                        help="the motion trials' IK tasks and time range (default: the scale setup's tasks, whole trials)")
    parser.add_argument("--mass", type=float, default=None, help="total mass, kg (default: the setup's, else the model's)")
    parser.add_argument("--preserve-mass-distribution", action=argparse.BooleanOptionalAction, default=None,
                        help="with --mass, keep each body's share of the mass (default: the setup's, else yes)")
    parser.add_argument("--time-range", type=float, nargs=2, default=None, metavar=("START", "END"),
                        help="static frames averaged, seconds (default: the setup's, else all)")
    parser.add_argument("--tie-left-right", action="store_true", help="one scale for each left/right pair of groups")
    parser.add_argument("--per-axis", nargs="*", default=[], metavar="GROUP", help="scale groups scaled per axis")
    parser.add_argument("--marker-set", default=None,
                        help="the model's marker set the .trc names (default: the attached or .osim markers, else site names)")
    parser.add_argument("--marker-sigma", type=float, default=0.01, metavar="M",
                        help="systematic marker error of a trial, m, against which the priors weigh (lower for "
                             "synthetic data)")
    parser.add_argument("--offset-sigma", type=float, default=0.01, metavar="M",
                        help="prior standard deviation of a marker offset of average task weight, m")
    parser.add_argument("--accuracy", type=float, default=1e-5, help="IK convergence tolerance, rad or m")
    parser.add_argument("--scaling", choices=("fit", "setup"), default="fit",
                        help="fit: scales and marker offsets fitted to every trial at once (default); setup: the "
                             "--setup's MeasurementSet/ScaleSet in its scaling_order and markers moved onto the static "
                             "trial, as OpenSim's ScaleTool does")
    parser.add_argument("--out", default=None, help="output folder (default: <static trial>_scaled)")


def _known_coordinates(setup, model):
    """``setup`` without the coordinate tasks of coordinates ``model`` lacks (a myo_sim model with a
    gait2392 setup), and their names."""
    import dataclasses

    skipped = [t.name for t in setup.coordinate_tasks if t.name not in model.coordinate_names]
    kept = tuple(t for t in setup.coordinate_tasks if t.name in model.coordinate_names)
    return dataclasses.replace(setup, coordinate_tasks=kept), skipped


def _static_targets(setup, model, static):
    """The setup's coordinate tasks for the averaged static trial: a value from a file is its mean."""
    import numpy as np

    from converters import opensim_setup
    from mjx_biomech.fitting.marker_objective import CoordinateTarget

    return [CoordinateTarget(t.name, t.weight, None if t.value is None else float(np.mean(t.value)))
            for t in opensim_setup.coordinate_targets(setup, model, static.times)]


def _motion_targets(setup, model, trial):
    from converters import opensim_setup
    from mjx_biomech.errors import InputError

    targets = opensim_setup.coordinate_targets(setup, model, trial.times)
    if any(t.value is not None and getattr(t.value, "ndim", 0) for t in targets):
        raise InputError(f"{setup.path}: coordinate tasks with values from a file apply to one trial; "
                         "scale's motion trials share their tasks (run mjx-biomech ik for per-trial ones)")
    return targets


def _scale_as_setup(setup, model, static, trials, marker_set, fixed, accuracy, progress, options):
    """OpenSim's ScaleTool: the setup's measurements and manual scales, then marker placement."""
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.measurements import measured_body_scales, scale_by_factors

    if setup is None or static is None:
        raise InputError("--scaling setup: give --setup Setup_Scale.xml and a static trial")
    order = setup.scaling_order if setup.scaler_apply else ()
    if order and not (setup.measurements or setup.manual_scales):
        raise InputError(f"{setup.path}: --scaling setup: the <ModelScaler> has no applied measurement or manual scale")
    scales = measured_body_scales(model, static, setup.measurements, setup.manual_scales, order, marker_set)
    return scale_by_factors(model, scales, static, trials, marker_set=marker_set, fixed_markers=fixed,
                            place_markers=setup.placer_apply, accuracy=accuracy, progress=progress, **options)


def scale_from_args(args: argparse.Namespace, progress=None):
    """Scale (and IK) as the command's ``args`` ask and write every output into the output
    folder, printing nothing; returns the :class:`~mjx_biomech.fitting.markers.MarkerFitResult`,
    the folder and the written files (name -> path). ``progress`` is
    :func:`mjx_biomech.fitting.markers.fit_markers`' callback; ``mjx-biomech batch`` runs its
    marker-based subjects through this."""
    import mjx_biomech
    from converters import marker_sets, opensim_setup, scale_output
    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.markers import fit_markers

    setup = opensim_setup.read_scale_setup(args.setup) if args.setup else None
    ik_setup = opensim_setup.read_ik_setup(args.ik_setup) if args.ik_setup else None
    source = args.model or (setup.model_file if setup else None)
    model = mjx_biomech.load_model(source)
    markers_file = args.markers or (setup.marker_set_file if setup else None)
    placements = opensim_setup.read_marker_set(markers_file) if markers_file else ()
    if placements:
        model = marker_sets.attach_markers(model, placements, str(markers_file))
    marker_set = args.marker_set or (marker_sets.MARKER_SET if marker_sets.MARKER_SET in model.marker_sets else None)
    if marker_set is not None and marker_set not in model.marker_sets:
        raise InputError(f"--marker-set {marker_set!r}: {model.source} has marker sets {sorted(model.marker_sets)}")
    fixed = [p.name for p in placements if p.fixed]
    if not placements and str(source).lower().endswith(".osim") and model.site_names:
        fixed = [p.name for p in opensim_setup.read_marker_set(source) if p.fixed]  # the .osim's own markers
    model = model.with_scale_groups(tie_left_right=args.tie_left_right, per_axis=tuple(args.per_axis))

    static_path = args.static or (setup.marker_file if setup else None)
    if static_path is None and not args.trials:
        raise InputError("give a static trial (--static or a --setup with a marker_file) or --trials")
    time_range = args.time_range or (setup.time_range if setup else (-float("inf"), float("inf")))
    static = opensim_setup.read_marker_trial(static_path).window(*time_range) if static_path else None
    trials = [opensim_setup.read_marker_trial(p) for p in args.trials]
    if ik_setup is not None:
        trials = [t.window(*ik_setup.time_range) for t in trials]
    names = model.marker_names(marker_set)
    first = static or trials[0]
    if not set(names) & set(first.marker_names):
        if markers_file:
            raise InputError(f"{markers_file}: none of its markers is in {first.source}")
        raise InputError(f"{model.source}: the model has no markers that {first.source} names; give --markers "
                         "MarkerSet.xml (an OpenSim marker set, attached by body name)")
    skipped = []
    if setup is not None:
        setup, skipped = _known_coordinates(setup, model)
    if ik_setup is not None:
        ik_setup, more = _known_coordinates(ik_setup, model)
        skipped += more
    task_setup = ik_setup or setup
    options = {}
    if setup is not None and static is not None:
        options.update(static_marker_weights=opensim_setup.marker_weights(setup, names, static),
                       static_coordinate_targets=_static_targets(setup, model, static))
    if task_setup is not None and trials:
        options.update(marker_weights=opensim_setup.marker_weights(task_setup, names, trials[0]),
                       coordinate_targets=_motion_targets(task_setup, model, trials[0]))

    if args.scaling == "setup":
        result = _scale_as_setup(setup, model, static, trials, marker_set, fixed, args.accuracy, progress, options)
    else:
        result = fit_markers(model, trials, static=static, marker_set=marker_set, fixed_markers=fixed,
                             marker_sigma_m=args.marker_sigma, offset_sigma_m=args.offset_sigma,
                             accuracy=args.accuracy, progress=progress, **options)
    mass = args.mass if args.mass is not None else (setup.mass if setup else None)
    preserve = args.preserve_mass_distribution
    preserve = (setup.preserve_mass_distribution if setup else True) if preserve is None else preserve
    out = Path(args.out or f"{(static or trials[0]).name}_scaled")
    settings = {"model": str(source or "bundled"), "static": str(static_path), "trials": list(args.trials),
                "markers": str(markers_file) if markers_file else None, "setup": args.setup,
                "scaling": args.scaling, "ik_setup": args.ik_setup,
                "marker_set": marker_set, "tie_left_right": args.tie_left_right, "per_axis": list(args.per_axis),
                "static_time_range_s": [float(static.times[0]), float(static.times[-1])] if static else None,
                "coordinate_tasks_skipped": sorted(set(skipped))}
    written = scale_output.write_scale_outputs(out, result, mass, preserve, placements if markers_file else (), settings)
    return result, out, written


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from converters import ik_output

    console = Console()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        tasks: dict = {}

        def progress(stage, done, total, info):
            label = f"{stage} {info.get('trial', '')}".strip()
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        result, out, written = scale_from_args(args, progress)
    model = result.model

    table = Table(title="scale factors")
    table.add_column("parameter")
    table.add_column("scale", justify="right")
    table.add_column("σ %", justify="right")
    for name in result.fitted_scales or result.model.scale_param_names:
        sigma = result.scale_sigma.get(name)
        table.add_row(name, f"{result.scales[name]:.4f}", "" if sigma is None else f"{100 * sigma:.2f}")
    console.print(table)
    if result.undetermined_scales or result.undetermined_markers:
        console.print("[yellow]not determined by the data (σ above 2 % / 1 cm):[/] "
                      + ", ".join(result.undetermined_scales + result.undetermined_markers)
                      + " — tie such groups to a neighbour (--tie-left-right) or hold them at the prior")
    errors = Table(title="marker errors with the scaled model")
    for col in ("trial", "frames", "RMS mm", "max mm", "skipped"):
        errors.add_column(col, justify="right")
    for trial in ([result.static] if result.static is not None else []) + list(result.trials):
        report = ik_output.marker_report(trial)
        errors.add_row(trial.name, str(report["frames"]), f"{1000 * report['marker_rms_m']:.2f}",
                       f"{1000 * report['marker_max_m']:.1f}", ", ".join(trial.skipped_markers) or "–")
    console.print(errors)
    if "model_scaled.osim" not in written:
        console.print(f"[yellow]no .osim written: {model.source} cannot be exported (see report.json)[/]")
    console.print(f"scaled in {result.scale_seconds:.1f} s ({result.seconds:.1f} s with IK); "
                  f"outputs in [bold]{out}[/] ({len(written)} files)")
    return 0
