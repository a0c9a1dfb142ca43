"""Inverse kinematics of gait2392 subject01's walk: ``mjx-biomech ik`` vs OpenSim's
InverseKinematicsTool, same files (OpenSim's scaled model, its .trc and Setup_IK.xml), same run.

Two comparisons of the same work, each side warmed up and timed at its best of ``--repeats``
runs, with the model already loaded:

- **solver**: the frames' IK from marker data already in memory to coordinates and marker
  errors. Ours: the ``solve_ik`` call (which also computes every coordinate's standard error).
  OpenSim: an ``InverseKinematicsSolver`` on the setup's marker weights and coordinate tasks,
  ``assemble`` at the first frame, then ``track`` and ``computeCurrentMarkerErrors`` each frame,
  as the tool does.
- **tool**: the whole run from the files. OpenSim: ``InverseKinematicsTool.run()`` (reads the
  .trc, solves, writes its .mot and marker-error .sto). Ours: read the setup and the .trc, solve,
  write the .mot, the marker-error .sto and the standard errors' .sto (no report, no plots).

Nothing may compile in a timed run of ours: compilations are counted through
``jax.monitoring`` and the script fails if any happens (compile time is reported apart).

Prints frames/s both ways, marker RMS (OpenSim's per-frame ``marker_error_RMS``,
root-mean-squared over the frames) and the per-coordinate RMS difference between the two
results; the last line is ``speedup_vs_opensim=<solver ratio> tool_speedup_vs_opensim=<tool
ratio> ours_marker_rms_mm=<> opensim_marker_rms_mm=<>``.

Run: ``python benchmarks/ik.py [--data /work/shared/data/opensim-models] [--repeats 10]``; the
data folder defaults to ``$MJX_BIOMECH_SHARED/data/opensim-models`` (``MJX_BIOMECH_SHARED``
defaulting to ``/work/shared``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np
from fk import best_seconds
from gait2392_pipeline import PIPELINE, SAGITTAL, missing, parser, quiet_fd1
from rich.console import Console
from rich.table import Table

import mjx_biomech
from converters import ik_output, mot, opensim_setup
from mjx_biomech.fitting.ik import solve_ik

_COMPILES = []


def _count_compiles(event: str, duration: float, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(duration)


def _opensim_tool(folder: Path, setup: Path, model, repeats: int):
    """OpenSim's tool in ``folder``: (best seconds, its .mot, its marker-error .sto)."""
    import opensim as osim

    def run():
        tool = osim.InverseKinematicsTool(str(setup))
        tool.setModel(model)
        tool.setResultsDir(str(folder))
        tool.setOutputMotionFileName(str(folder / "opensim_ik.mot"))
        with quiet_fd1():
            tool.run()
        return tool

    best = best_seconds(run, repeats)
    return best, folder / "opensim_ik.mot", folder / f"{run().getName()}_ik_marker_errors.sto"


def _opensim_solver(setup_path: Path, trc_path: Path, model, times: np.ndarray, repeats: int) -> float:
    """Best seconds of OpenSim's InverseKinematicsSolver over ``times``, the data in memory."""
    import opensim as osim

    tool = osim.InverseKinematicsTool(str(setup_path))
    state = model.initSystem()
    weights = osim.SetMarkerWeights()
    coordinates = osim.SimTKArrayCoordinateReference()
    tasks = tool.getIKTaskSet()
    for i in range(tasks.getSize()):
        task = tasks.get(i)
        if not task.getApply():
            continue
        if osim.IKMarkerTask.safeDownCast(task) is not None:
            weights.cloneAndAppend(osim.MarkerWeight(task.getName(), task.getWeight()))
        else:  # the walk's coordinate tasks hold the coordinates' defaults
            default = model.getCoordinateSet().get(task.getName()).getDefaultValue()
            reference = osim.CoordinateReference(task.getName(), osim.Constant(default))
            reference.setWeight(task.getWeight())
            coordinates.push_back(reference)
    markers = osim.MarkersReference(str(trc_path), weights)
    errors = osim.SimTKArrayDouble()

    def run():
        solver = osim.InverseKinematicsSolver(model, markers, coordinates, tool.get_constraint_weight())
        solver.setAccuracy(tool.get_accuracy())
        state.setTime(float(times[0]))
        solver.assemble(state)
        for t in times:
            state.setTime(float(t))
            solver.track(state)
            solver.computeCurrentMarkerErrors(errors)

    return best_seconds(run, repeats)


def main() -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--repeats", type=int, default=10)
    args = arguments.parse_args()
    source = args.data / PIPELINE
    files = [source / "subject01_Setup_IK.xml", source / "subject01_walk1.trc",
             source / "OutputReference" / "subject01_simbody.osim"]
    if missing(files, "benchmarks/ik.py"):
        return 1
    import opensim as osim

    osim.Logger.setLevelString("error")  # no per-frame log lines (OpenSim at its fastest), no missing meshes
    console = Console()
    jax.monitoring.register_event_duration_secs_listener(_count_compiles)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in files:
            shutil.copy(f, folder / f.name)  # the setup names the model and the .trc beside it
        setup_path, trc_path, model_path = (folder / f.name for f in files)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # meshes the MuJoCo model does without
            model = mjx_biomech.load_model(model_path)

        def read():
            setup = opensim_setup.read_ik_setup(setup_path)
            trial = opensim_setup.read_marker_trial(trc_path).window(*setup.time_range)
            weights = opensim_setup.marker_weights(setup, model.marker_names(), trial)
            return setup, trial, weights, opensim_setup.coordinate_targets(setup, model, trial.times)

        setup, trial, weights, targets = read()

        def solve(trial=trial, weights=weights, targets=targets, setup=setup):
            return solve_ik(model, trial, marker_weights=weights, coordinate_targets=targets, accuracy=setup.accuracy)

        def whole_run():
            setup, trial, weights, targets = read()
            ik_output.write_trial_outputs(folder / "ours", solve(trial, weights, targets, setup), plots=False)

        first = solve()
        compile_s = first.compile_seconds
        _COMPILES.clear()
        ours_solver = best_seconds(solve, args.repeats)
        ours_tool = best_seconds(whole_run, args.repeats)
        if _COMPILES:
            raise SystemExit(f"benchmarks/ik.py: {len(_COMPILES)} compilations in the timed runs")
        result = solve()

        osim_model = osim.Model(str(model_path))
        opensim_tool, opensim_mot, opensim_sto = _opensim_tool(folder, setup_path, osim_model, args.repeats)
        opensim_solver = _opensim_solver(setup_path, trc_path, osim_model, trial.times, args.repeats)

        ik_output.write_ik_outputs(folder / "ours", [result])
        ours_rms = mot.read_mot(folder / "ours" / f"{trial.name}_marker_errors.sto").column("marker_error_RMS")
        theirs_rms = mot.read_mot(opensim_sto).column("marker_error_RMS")
        compare = ik_output.compare_with_reference(result, opensim_mot)["coordinates"]

    frames = trial.num_frames
    ours_mm = 1000 * float(np.sqrt(np.mean(ours_rms**2)))
    theirs_mm = 1000 * float(np.sqrt(np.mean(theirs_rms**2)))
    table = Table(title=f"gait2392 subject01 walk, {frames} frames ({trial.times[0]:.2f}–{trial.times[-1]:.2f} s), "
                        f"accuracy {setup.accuracy:g}, best of {args.repeats}")
    for col in ("", "solver frames/s", "tool frames/s", "marker RMS mm", "evaluations/frame", "compile s"):
        table.add_column(col, justify="right")
    table.add_row("OpenSim", f"{frames / opensim_solver:.0f}", f"{frames / opensim_tool:.0f}", f"{theirs_mm:.3f}", "",
                  "")
    table.add_row("mjx-biomech", f"{frames / ours_solver:.0f}", f"{frames / ours_tool:.0f}", f"{ours_mm:.3f}",
                  f"{np.mean(result.iterations):.2f}", f"{compile_s:.1f}")
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
                  f"{int(result.converged.sum())}/{frames} frames converged; no compilation in the timed runs")
    print(f"speedup_vs_opensim={opensim_solver / ours_solver:.1f} tool_speedup_vs_opensim={opensim_tool / ours_tool:.1f} "
          f"ours_marker_rms_mm={ours_mm:.3f} opensim_marker_rms_mm={theirs_mm:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
