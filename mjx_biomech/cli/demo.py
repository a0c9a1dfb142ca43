"""``mjx-biomech demo``: fit a synthetic 8-camera capture of the bundled model and write every output.

A known person (segment scales 5–10 % off the model, left and right within 2 %, marker offsets
of 1–2 cm) walks through
an 8-camera ring; two cameras' calibrations are wrong by 2° and 2 cm. The fit (spline
trajectory, AdamW, bundle adjustment) recovers the person, the motion and the cameras; the
recovered-versus-true errors are printed and every output is written to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MARKER_SET = "bml_movi_87"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="3 s of walking instead of 6 (about a minute on 2 CPU cores)")
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic person, motion, noise and camera errors")
    parser.add_argument("--steps", type=int, default=None,
                        help="Levenberg-Marquardt iterations per solve at most (default: the library's; each solve stops "
                             "once converged)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    import mjx_biomech
    from converters import fit_output
    from mjx_biomech.analysis.results import truth_metrics
    from mjx_biomech.capture import synthetic
    from mjx_biomech.cli.fit import progress_bars
    from mjx_biomech.fitting.fit import fit

    console = Console()
    # Three seconds is the shortest walk on which scales, offsets and two wrong cameras separate
    # well (1.5 s left joint angles 4-5 degrees off); see the closing notes of the fitting issue.
    duration = 3.0 if args.quick else 6.0
    model = mjx_biomech.load_model()
    times, coords = synthetic.walking(model, duration=duration, fps=30.0, seed=args.seed)
    # A plausible person: left and right within 2 % of each other, as the fit's priors expect.
    person = synthetic.person(model, seed=args.seed, marker_set=MARKER_SET, left_right_asymmetry=0.02)
    rig = synthetic.ring_rig(n_cameras=8)
    capture = synthetic.capture(model, person, times, coords, rig, MARKER_SET, noise_px=1.5, dropout=0.1,
                                seed=args.seed, name="walk")
    wrong = synthetic.perturb_cameras(rig, ["cam3", "cam6"], angle_deg=2.0, distance_m=0.02, seed=args.seed)
    console.print(f"[bold]mjx-biomech demo[/]: {duration:g} s of walking, 8 cameras, {len(capture.keypoint_names)} keypoints "
                  f"({MARKER_SET}), cam3 and cam6 off by 2° / 2 cm; Levenberg-Marquardt with bundle adjustment")
    with progress_bars() as progress:
        result = fit(model, capture, wrong, MARKER_SET, representation="spline", solver="lm", steps=args.steps,
                     bundle_adjust=True, seed=args.seed, progress=progress)
    truth = truth_metrics(result, person, coords, rig)
    out = fit_output.save(result, Path(args.out), truth=truth)

    table = Table(title="recovered vs true")
    table.add_column("quantity")
    table.add_column("error", justify="right")
    table.add_row("largest body-scale error", f"{truth['scale_error_max_pct']:.2f} %")
    table.add_row("joint-angle RMSE (pelvis and legs, after 0.5 s)", f"{truth['joint_rmse_deg']:.2f}°")
    table.add_row("marker-offset error (mean)", f"{truth['offset_error_mm']:.1f} mm")
    table.add_row("camera rotation error (worst)", f"{truth['initial_extrinsic_error_deg']:.2f}° → {truth['extrinsic_error_deg']:.2f}°")
    table.add_row("camera centre error (worst)", f"{truth['initial_extrinsic_error_mm']:.1f} mm → {truth['extrinsic_error_mm']:.1f} mm")
    table.add_row("GC_5 (keypoints within 5 px)", f"{result.metrics['gc5']:.3f}")
    table.add_row("σ_NIQR of reprojection errors", f"{result.metrics['sigma_niqr_px']:.2f} px")
    table.add_row("fit time", f"{result.settings['seconds']:.1f} s")
    console.print(table)
    scales = Table(title="scale groups: error of their bodies' scale and its standard error")
    for col in ("group", "error %", "σ %", ""):
        scales.add_column(col, justify="left" if col in ("group", "") else "right")
    sigma = truth.get("scale_sigma_pct", {})
    for name, err in truth["scale_error_pct"].items():
        s = sigma.get(name)
        scales.add_row(name, f"{err:+.2f}", "" if s is None else f"{s:.2f}",
                       "not determined by the data" if name in truth.get("scale_not_determined", ()) else "")
    console.print(scales)
    # Only each body's product of group scales is identifiable (``overall`` x group), so compare those.
    fitted, true = np.asarray(model.body_scales(result.params))[:, 0], np.asarray(model.body_scales(person))[:, 0]
    console.print("body scales: " + ", ".join(
        f"{g.name} {fitted[model.body_names.index(g.bodies[0])]:.3f} (true {true[model.body_names.index(g.bodies[0])]:.3f})"
        for g in model.scale_groups if g.name != "overall"))
    console.print(f"outputs in [bold]{out}[/]")
    return 0
