"""Scaling gait2392 subject01, then IK of the walk: ``mjx-biomech scale`` vs OpenSim's ScaleTool
and InverseKinematicsTool, same files, same run.

(a) ``mjx-biomech scale`` from the generic ``gait2392_thelen2003muscle.osim`` with the shared
``subject01_Setup_Scale.xml`` (marker set, static trial 1–2 s, 72.6 kg, task weights) and the walk
(``subject01_Setup_IK.xml``: 0.5–2.5 s, IK tasks) against OpenSim's own pipeline: its reference
scaled model ``OutputReference/subject01_simbody.osim`` and its IK of the walk, run here. Marker
RMS over the walk (OpenSim's per-frame ``marker_error_RMS``, root-mean-squared over the frames;
target: ours ≤ OpenSim's) and the RMS difference of every coordinate from OpenSim's (sagittal
hip/knee/ankle flexion: target ≤ 3°).
(b) The same with ``myo_sim:myolegs`` and the gait2392 marker set (target: walk marker RMS within
5 mm of ours with gait2392), and with ``--scaling setup`` (the setup's measurement set and marker
placement, as OpenSim's ScaleTool: it should reproduce OpenSim's own pipeline).
(c) Time: ``mjx-biomech scale`` (scaling, IK of static and walk, every output written; the first
run compiles, the second finds JAX's persistent compilation cache) vs ScaleTool + IK tool (the
generic model copied beside the setup as ``gait2392_simbody.osim``, as OpenSim installs it).

Run: ``python benchmarks/scale.py [--data /work/shared/data/opensim-models]`` (default
``$MJX_BIOMECH_SHARED/data/opensim-models``, ``MJX_BIOMECH_SHARED`` defaulting to ``/work/shared``).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from gait2392_pipeline import PIPELINE, SAGITTAL, missing, parser, quiet_fd1
from rich.console import Console
from rich.table import Table

from converters import mot
from mjx_biomech import cli

GENERIC = Path("Models") / "Gait2392_Simbody" / "gait2392_thelen2003muscle.osim"
TRANSLATIONS = ("_tx", "_ty", "_tz")


@contextlib.contextmanager
def _quiet():
    """Silence file descriptor 1 (OpenSim's C++ prints) and Python's stdout (the CLI's tables)."""
    with quiet_fd1(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meshes the MuJoCo model does without
        yield


def _opensim(folder: Path) -> dict:
    """ScaleTool then IK tool with its model (timed), and the IK tool with the reference model."""
    import opensim as osim

    osim.Logger.setLevelString("error")
    for name in ("opensim_pipeline", "opensim_reference"):
        (folder / name).mkdir()
    # ScaleTool reads the files its setup names from the working folder (elsewhere it crashes).
    with _quiet(), contextlib.chdir(folder):
        start = time.perf_counter()
        osim.ScaleTool(str(folder / "subject01_Setup_Scale.xml")).run()
        scaled = time.perf_counter()
        tool = osim.InverseKinematicsTool(str(folder / "subject01_Setup_IK.xml"))
        tool.setResultsDir(str(folder / "opensim_pipeline"))
        tool.setOutputMotionFileName(str(folder / "opensim_pipeline" / "walk_ik.mot"))
        tool.run()
        done = time.perf_counter()
        reference = osim.Model(str(folder / "OutputReference" / "subject01_simbody.osim"))  # the tool only borrows it
        tool = osim.InverseKinematicsTool(str(folder / "subject01_Setup_IK.xml"))
        tool.setModel(reference)
        tool.setResultsDir(str(folder / "opensim_reference"))
        tool.setOutputMotionFileName(str(folder / "opensim_reference" / "walk_ik.mot"))
        tool.run()
    sto = folder / "opensim_reference" / f"{tool.getName()}_ik_marker_errors.sto"
    return {"scale_s": scaled - start, "ik_s": done - scaled, "mot": folder / "opensim_reference" / "walk_ik.mot",
            "rms": mot.read_mot(sto).column("marker_error_RMS")}


def _ours(folder: Path, model: str, out: str, extra: tuple[str, ...] = ()) -> tuple[float, dict]:
    """``mjx-biomech scale`` on the shared files: (seconds, report.json)."""
    argv = ["scale", model, "--setup", str(folder / "subject01_Setup_Scale.xml"),
            "--trials", str(folder / "subject01_walk1.trc"), "--ik-setup", str(folder / "subject01_Setup_IK.xml"),
            "--out", str(folder / out), *extra]
    with _quiet():
        start = time.perf_counter()
        status = cli.main(argv)
        seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"benchmarks/scale.py: mjx-biomech {' '.join(argv)} failed with status {status}")
    return seconds, json.loads((folder / out / "report.json").read_text())


def _rms_mm(per_frame: np.ndarray) -> float:
    return 1000 * float(np.sqrt(np.mean(per_frame**2)))


def _differences(ours: Path, reference: Path, flipped: tuple[str, ...] = ()) -> dict[str, float]:
    """Per coordinate: RMS difference (degrees; mm for translations, which .mot files keep in metres)
    at the shared times; the coordinates ``flipped`` have the opposite sign in ``ours``."""
    a, b = mot.read_mot(ours), mot.read_mot(reference)
    keep = np.isin(np.round(b.times, 6), np.round(a.times, 6))
    out = {}
    for name in a.names:
        if name in b.names:
            diff = (-1 if name in flipped else 1) * a.column(name) - b.column(name)[keep]
            out[name] = float(np.sqrt(np.mean(diff**2))) * (1000.0 if name.endswith(TRANSLATIONS) else 1.0)
    return out


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    source = args.data / PIPELINE
    names = ["subject01_Setup_Scale.xml", "subject01_Setup_IK.xml", "gait2392_Scale_MarkerSet.xml",
             "subject01_static.trc", "subject01_walk1.trc"]
    files = [source / n for n in names] + [args.data / GENERIC, source / "OutputReference" / "subject01_simbody.osim"]
    if missing(files, "benchmarks/scale.py"):
        return 1
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in files[:5]:
            shutil.copy(f, folder / f.name)
        shutil.copy(args.data / GENERIC, folder / "gait2392_simbody.osim")
        (folder / "OutputReference").mkdir()
        shutil.copy(files[-1], folder / "OutputReference" / files[-1].name)

        # A cache of this run's own: the first run of ours compiles, the second finds it.
        jax.config.update("jax_compilation_cache_dir", str(folder / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        theirs = _opensim(folder)
        cold, report = _ours(folder, str(folder / "gait2392_simbody.osim"), "ours")
        warm, report = _ours(folder, str(folder / "gait2392_simbody.osim"), "ours")
        _, myolegs = _ours(folder, "myo_sim:myolegs", "myolegs")
        _, as_setup = _ours(folder, str(folder / "gait2392_simbody.osim"), "setup", ("--scaling", "setup"))
        setup_rms = mot.read_mot(folder / "setup" / "subject01_walk1_marker_errors.sto").column("marker_error_RMS")
        setup_differences = _differences(folder / "setup" / "subject01_walk1.mot", theirs["mot"])
        ours_rms = mot.read_mot(folder / "ours" / "subject01_walk1_marker_errors.sto").column("marker_error_RMS")
        myo_rms = mot.read_mot(folder / "myolegs" / "subject01_walk1_marker_errors.sto").column("marker_error_RMS")
        differences = _differences(folder / "ours" / "subject01_walk1.mot", theirs["mot"])
        # MyoSuite's knee flexion is positive, gait2392's negative.
        myo_differences = _differences(folder / "myolegs" / "subject01_walk1.mot", theirs["mot"],
                                       flipped=("knee_angle_r", "knee_angle_l"))

    frames = report["trials"]["subject01_walk1"]["frames"]
    accuracy = Table(title=f"gait2392 subject01: scale, then IK of the walk ({frames} frames, 0.5–2.5 s); "
                           "OpenSim: its reference model and IK")
    for col in ("", "walk RMS mm", "static RMS mm", "pelvis", "femur_r", "tibia_r", "torso"):
        accuracy.add_column(col, justify="right")
    accuracy.add_row("OpenSim", f"{_rms_mm(theirs['rms']):.2f}", "", "", "", "", "")
    for label, r, rms in (("ours, gait2392", report, ours_rms), ("ours, myolegs", myolegs, myo_rms),
                          ("ours, gait2392, --scaling setup", as_setup, setup_rms)):
        s = {name: values[0] for name, values in r["scales"]["bodies"].items()}
        accuracy.add_row(label, f"{_rms_mm(rms):.2f}", f"{1000 * r['trials']['subject01_static']['marker_rms_m']:.2f}",
                         *(f"{s[k]:.3f}" if k in s else "–" for k in ("pelvis", "femur_r", "tibia_r", "torso")))
    console.print(accuracy)
    diff = Table(title="RMS difference from OpenSim's pipeline (walk)")
    for col in ("coordinate", "gait2392", "myolegs (knee sign flipped)", "gait2392, --scaling setup"):
        diff.add_column(col, justify="right")
    for name, value in differences.items():
        mark = " *" if name in SAGITTAL else ""
        other = f"{myo_differences[name]:.2f}" if name in myo_differences else "–"
        diff.add_row(name + mark, f"{value:.2f}", other, f"{setup_differences[name]:.2f}")
    console.print(diff)
    timing = Table(title="time, scale + IK of the walk (s)")
    for col in ("", "scale", "IK", "total"):
        timing.add_column(col, justify="right")
    timing.add_row("OpenSim ScaleTool + IK tool", f"{theirs['scale_s']:.1f}", f"{theirs['ik_s']:.1f}",
                   f"{theirs['scale_s'] + theirs['ik_s']:.1f}")
    timing.add_row("mjx-biomech scale, first run (compiles)", "", "", f"{cold:.1f}")
    timing.add_row("mjx-biomech scale, second run", f"{report['time_s']['scale']:.1f}",
                   f"{report['time_s']['total'] - report['time_s']['scale']:.1f}", f"{warm:.1f}")
    console.print(timing)
    worst = max(differences[n] for n in SAGITTAL)
    gap = _rms_mm(myo_rms) - _rms_mm(ours_rms)
    console.print(f"* sagittal: largest RMS difference {worst:.2f}° (target ≤ 3°); myolegs − gait2392 walk marker RMS "
                  f"{gap:+.2f} mm (target ≤ 5 mm)")
    print(f"ours_walk_marker_rms_mm={_rms_mm(ours_rms):.3f} opensim_walk_marker_rms_mm={_rms_mm(theirs['rms']):.3f} "
          f"myolegs_walk_marker_rms_mm={_rms_mm(myo_rms):.3f} sagittal_max_rms_deg={worst:.2f} "
          f"setup_walk_marker_rms_mm={_rms_mm(setup_rms):.3f} "
          f"speedup_vs_opensim={(theirs['scale_s'] + theirs['ik_s']) / warm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
