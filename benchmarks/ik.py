"""Inverse kinematics of gait2392 subject01's walk: ``mjx-biomech ik`` vs OpenSim's
InverseKinematicsTool, same files (OpenSim's scaled model, its .trc and Setup_IK.xml), same run.

Both are warmed up first and timed at their best of ``--repeats`` runs (ours: the ``solve_ik``
call, compile time reported apart; OpenSim: ``InverseKinematicsTool.run()`` with the model
already loaded). Prints frames/s, marker RMS (OpenSim's per-frame ``marker_error_RMS``,
root-mean-squared over the frames) and the per-coordinate RMS difference between the two
results; the last line is ``speedup_vs_opensim=<ratio> ours_marker_rms_mm=<> opensim_marker_rms_mm=<>``.

Run: ``python benchmarks/ik.py [--data /work/shared/data/opensim-models] [--repeats 3]``; the
data folder defaults to ``$MJX_BIOMECH_SHARED/data/opensim-models`` (``MJX_BIOMECH_SHARED``
defaulting to ``/work/shared``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from gait2392_pipeline import PIPELINE, SAGITTAL, missing, parser, quiet_fd1
from rich.console import Console
from rich.table import Table

import mjx_biomech
from converters import ik_output, mot, opensim_setup
from mjx_biomech.fitting.ik import solve_ik


def _opensim(folder: Path, setup: Path, model_path: Path, repeats: int):
    """OpenSim's tool in ``folder``: (best seconds, its .mot, its marker-error .sto)."""
    import opensim as osim

    osim.Logger.setLevelString("error")  # no per-frame log lines (OpenSim at its fastest), no missing meshes
    model = osim.Model(str(model_path))
    best = np.inf
    for _ in range(repeats + 1):  # the first run warms up
        tool = osim.InverseKinematicsTool(str(setup))
        tool.setModel(model)
        tool.setResultsDir(str(folder))
        tool.setOutputMotionFileName(str(folder / "opensim_ik.mot"))
        with quiet_fd1():
            start = time.perf_counter()
            tool.run()
            best = min(best, time.perf_counter() - start)
    return best, folder / "opensim_ik.mot", folder / f"{tool.getName()}_ik_marker_errors.sto"


def main() -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--repeats", type=int, default=3)
    args = arguments.parse_args()
    source = args.data / PIPELINE
    files = [source / "subject01_Setup_IK.xml", source / "subject01_walk1.trc",
             source / "OutputReference" / "subject01_simbody.osim"]
    if missing(files, "benchmarks/ik.py"):
        return 1
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in files:
            shutil.copy(f, folder / f.name)  # the setup names the model and the .trc beside it
        setup_path, trc_path, model_path = (folder / f.name for f in files)

        opensim_s, opensim_mot, opensim_sto = _opensim(folder, setup_path, model_path, args.repeats)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # meshes the MuJoCo model does without
            model = mjx_biomech.load_model(model_path)
        setup = opensim_setup.read_ik_setup(setup_path)
        trial = opensim_setup.read_marker_trial(trc_path).window(*setup.time_range)
        weights = opensim_setup.marker_weights(setup, model.marker_names(), trial)
        targets = opensim_setup.coordinate_targets(setup, model, trial.times)

        def ours():
            return solve_ik(model, trial, marker_weights=weights, coordinate_targets=targets, accuracy=setup.accuracy)

        first = ours()
        best = np.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = ours()
            best = min(best, time.perf_counter() - start)
        ik_output.write_ik_outputs(folder / "ours", [result])
        ours_rms = mot.read_mot(folder / "ours" / f"{trial.name}_marker_errors.sto").column("marker_error_RMS")
        theirs_rms = mot.read_mot(opensim_sto).column("marker_error_RMS")
        compare = ik_output.compare_with_reference(result, opensim_mot)["coordinates"]

    frames = trial.num_frames
    ours_mm = 1000 * float(np.sqrt(np.mean(ours_rms**2)))
    theirs_mm = 1000 * float(np.sqrt(np.mean(theirs_rms**2)))
    table = Table(title=f"gait2392 subject01 walk, {frames} frames ({trial.times[0]:.2f}–{trial.times[-1]:.2f} s), "
                        f"accuracy {setup.accuracy:g}")
    for col in ("", "frames/s", "marker RMS mm", "iterations/frame", "compile s"):
        table.add_column(col, justify="right")
    table.add_row("OpenSim IK tool", f"{frames / opensim_s:.0f}", f"{theirs_mm:.3f}", "", "")
    table.add_row("mjx-biomech ik", f"{frames / best:.0f}", f"{ours_mm:.3f}", f"{np.mean(result.iterations):.2f}",
                  f"{first.compile_seconds:.1f}")
    console.print(table)
    diff = Table(title="RMS difference from OpenSim's result")
    diff.add_column("coordinate")
    diff.add_column("RMS", justify="right")
    for name, value in compare.items():
        mark = " *" if name in SAGITTAL else ""
        diff.add_row(name + mark, f"{value['rms_deg']:.4f}°" if "rms_deg" in value else f"{1000 * value['rms_m']:.4f} mm")
    console.print(diff)
    worst = max(compare[n]["rms_deg"] for n in SAGITTAL)
    console.print(f"* hip/knee/ankle flexion: largest RMS difference {worst:.4f}° (target ≤ 0.5°); "
                  f"{int(result.converged.sum())}/{frames} frames converged")
    print(f"speedup_vs_opensim={opensim_s / best:.1f} ours_marker_rms_mm={ours_mm:.3f} opensim_marker_rms_mm={theirs_mm:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
