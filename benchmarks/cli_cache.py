"""First and second run of the command line with JAX's persistent compilation cache (on by
default): each run is a new ``mjx-biomech`` process, both with one fresh, empty cache folder
(``MJX_BIOMECH_CACHE_DIR``), so the first compiles and writes every program and the second loads
them. Wall time of the whole process (start, imports, reading, compiling or loading, computing,
writing), as a user waits for it.

Commands: ``mjx-biomech demo --quick`` and, when the opensim-models data is there (``--data``,
default ``$MJX_BIOMECH_SHARED/data/opensim-models``), ``mjx-biomech ik`` on gait2392 subject01's
walk with OpenSim's scaled model and its Setup_IK.xml (the files of ``benchmarks/ik.py``). With
``--no-cache-run`` each command also runs once with ``--no-compile-cache`` (what a run costs
without the cache). Printed: a table of the wall times, the cache folder's entries and size; the
last line is ``demo_first_s=<> demo_second_s=<> ik_first_s=<> ik_second_s=<>`` (the ik fields only
with the data). ``entries`` are JAX's compiled programs, ``traced`` the traced programs kept in
``programs/`` (``mjx_biomech.program_cache``), MB both together.

Run: ``python benchmarks/cli_cache.py [--data DIR] [--demo-steps N] [--no-cache-run]``.

Measured when the cache became the default (jax 0.9.2, CPU, 2 cores shared with other work; each
command a new process, run twice with a fresh cache folder, every program cached):

- No abort in any command line run: ``demo --quick`` (453 programs), ``fit`` of the small legs
  model of tests/study_data.py with bundle adjustment (its Schur-LM programs; 365 programs,
  48.2 s -> 15.0 s), ``scale`` of gait2392 subject01 with its walk (25.8 s -> 10.8 s), ``ik`` and
  ``scale`` of the legs model (8.0 s -> 3.3 s, 18.5 s -> 5.9 s). Results equal bit for bit.
- The abort: one pytest process running tests/test_fit.py then tests/test_fit_uncertainty.py
  with the cache on aborted (SIGABRT, no message) after 27 tests, 12 min, 4 GB resident and some
  1,400 programs written, inside ``executable.serialize()`` (jax/_src/compilation_cache.py:324)
  writing an AdamW fit's program. That test alone in a new process (506 programs written) passes,
  as do tests/test_spline_lm.py with tests/test_bundle.py in one process (641 written),
  tests/test_scale.py, and 2,300 small synthetic programs in one process: it comes with a long
  process's history, not with one program. Hence ``batch`` (many subjects in one process or in
  reused Ray workers) keeps the cache off unless asked.
- Every program, not JAX's default of those taking >= 1 s to compile: the demo's second run took
  38.3 s with 9 programs cached, 27.6 s with all 448 (a load takes some 4 ms). What a second run
  still spends on its programs is JAX tracing and lowering them to find their keys (the demo's
  453: 7.3 s and 4.2 s).
- Later (eager JAX work jitted): ``demo --quick`` compiles 231 programs instead of 453
  (JAX_LOG_COMPILES); this script then printed 68.4 s first, 27.3 s second for the demo and
  10.6 s / 5.7 s for ``ik``: the demo's second run did not get shorter, so what it spends is
  tracing and lowering its large programs and the computation, not the lookups.
- Each load from the cache logs two ERROR lines of XLA:CPU's machine check (jax-ml/jax#38445) and
  runs the program all the same; the command line keeps XLA's C++ log to fatal messages then.
- Within one process the first compilation fixes the cache folder: a later
  ``jax_compilation_cache_dir`` is not used. Cache keys are the same across processes and hash
  seeds for the same code (while someone edits the package the keys change with it).
- With traced programs kept too (mjx_biomech.program_cache; Dec 2 2026): ``demo --quick`` 67.9 s
  first, 12.9 s second (288 compiled, 14 traced); ``ik`` 9.2 s / 4.2 s (its one chunk program).
  Earlier the same day, alternating with and without traced programs on one warm cache: demo's
  second run 14.2-15.7 s with, 20.9-23.7 s without; jax.monitoring's tracing 5.3 -> 0.75 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gait2392_pipeline import PIPELINE, parser

FILES = ("subject01_Setup_IK.xml", "subject01_walk1.trc", "OutputReference/subject01_simbody.osim")


def _run(argv: list[str], env: dict, cwd: Path) -> float:
    """Seconds ``mjx-biomech argv`` took in a new process (its output is dropped; a failure stops here)."""
    exe = Path(sys.executable).with_name("mjx-biomech")
    start = time.perf_counter()
    done = subprocess.run([str(exe), *argv], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"mjx-biomech {' '.join(argv)} exited {done.returncode}")
    return seconds


def _measure(name: str, argv: list[str], work: Path, no_cache_run: bool) -> dict:
    """Two runs of ``argv`` with a fresh cache folder (and one without the cache)."""
    cache = work / f"cache_{name}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MJX_BIOMECH_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env["MJX_BIOMECH_CACHE_DIR"] = str(cache)
    row = {}
    if no_cache_run:
        print(f"{name}: without the cache ...", flush=True)
        row["no_cache_s"] = _run([*argv, "--out", str(work / f"{name}_none"), "--no-compile-cache"], env, work)
    for run in ("first", "second"):
        print(f"{name}: {run} run ...", flush=True)
        row[f"{run}_s"] = _run([*argv, "--out", str(work / f"{name}_{run}")], env, work)
    entries = [p for p in cache.iterdir() if p.is_file()]
    row["entries"] = len(entries)
    traced = list((cache / "programs").glob("*.jaxprog"))  # mjx_biomech.program_cache's traced programs
    row["traced"] = len(traced)
    row["mb"] = sum(p.stat().st_size for p in entries + traced) / 1e6
    return row


def main() -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--demo-steps", type=int, default=None,
                           help="the demo's --steps (default: the demo's own)")
    arguments.add_argument("--no-cache-run", action="store_true",
                           help="also run each command once with --no-compile-cache")
    args = arguments.parse_args()
    source = args.data / PIPELINE
    have_ik = all((source / f).is_file() for f in FILES)
    if not have_ik:
        print(f"benchmarks/cli_cache.py: no gait2392 pipeline under {args.data}; ik is left out")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = ["demo", "--quick"] + ([] if args.demo_steps is None else ["--steps", str(args.demo_steps)])
        rows["demo"] = _measure("demo", demo, work, args.no_cache_run)
        if have_ik:
            for f in FILES:
                shutil.copy(source / f, work / Path(f).name)  # the setup names the model and the .trc beside it
            ik = ["ik", "subject01_simbody.osim", "subject01_walk1.trc", "--setup", "subject01_Setup_IK.xml"]
            rows["ik"] = _measure("ik", ik, work, args.no_cache_run)

    print(f"\n{'command':<8} {'no cache s':>10} {'first s':>8} {'second s':>9} {'entries':>8} {'traced':>7} {'MB':>6}")
    for name, row in rows.items():
        none = f"{row['no_cache_s']:.1f}" if "no_cache_s" in row else "-"
        print(f"{name:<8} {none:>10} {row['first_s']:>8.1f} {row['second_s']:>9.1f} {row['entries']:>8} {row['traced']:>7} {row['mb']:>6.1f}")
    print(" ".join(f"{name}_{run}_s={row[f'{run}_s']:.1f}" for name, row in rows.items() for run in ("first", "second")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
