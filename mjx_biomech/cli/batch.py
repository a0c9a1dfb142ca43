"""``mjx-biomech batch``: fit every subject of a study, each as one Ray task, and tabulate them.

A study file (:mod:`mjx_biomech.cli.study`) lists subjects; a markerless subject runs what
``mjx-biomech fit`` runs (:func:`mjx_biomech.cli.fit.fit_from_args`, outputs by
:func:`converters.fit_output.save`), a marker-based one what ``mjx-biomech scale`` runs
(:func:`mjx_biomech.cli.scale.scale_from_args`). Each writes into ``<out>/<subject>/``.

Subjects run as Ray tasks: on a Ray instance started on this machine (``--workers`` at once), or on
a cluster (``--address``) whose nodes have this package installed and see the study's files at
the same paths. ``--sequential`` runs them one after another in this process, without Ray. A
worker gets the driver's JAX precision (``jax_enable_x64``) and compilation cache, and XLA uses
as many threads as the task has CPUs.

A subject whose manifest says it finished with the same inputs and settings is skipped; a failing
subject is recorded (its one-line error in ``summary.csv``, the traceback in its folder's
``error.txt``) and the others go on. ``summary.csv`` (rewritten as subjects finish) has one row
per trial: subject, kind, trial, status (ok, skipped, failed, pending), seconds, marker RMS (mm)
or GC_5/GC_10, the error, and one ``scale_<parameter>`` column per scale parameter.

Exit status: 0 when every subject is done, 1 when one or more failed, 2 for a bad study file or
bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mjx_biomech.cli.study import ERROR_FILE, MANIFEST, MARKERLESS, Study, Subject, digest, finished, read_study, write_manifest
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic

SUMMARY = "summary.csv"
_COLUMNS = ("subject", "kind", "trial", "status", "seconds", "marker_rms_mm", "gc5", "gc10", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study file (TOML): subjects, their trials and settings (see README, 'Whole studies')")
    parser.add_argument("--out", required=True, help="output folder: one folder per subject and summary.csv")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on (ray://HOST:10001, or auto for the one this machine belongs to); "
                             "default: start Ray on this machine")
    parser.add_argument("--workers", type=int, default=None,
                        help="subjects at once on this machine's Ray (default: its CPU cores / --cpus-per-subject)")
    parser.add_argument("--cpus-per-subject", type=float, default=1.0,
                        help="CPUs Ray reserves for each subject (XLA gets as many threads)")
    parser.add_argument("--gpus-per-subject", type=float, default=0.0, help="GPUs Ray reserves for each subject")
    parser.add_argument("--sequential", action="store_true", help="no Ray: one subject after another in this process")
    parser.add_argument("--redo", action="store_true", help="fit every subject again, finished or not")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mjx_biomech.cli.fit import progress_bars

    study = read_study(args.study)
    console = Console()
    marks = {"ok": "[green]done[/]", "skipped": "[dim]skipped (finished earlier)[/]", "failed": "[red]failed[/]"}

    with progress_bars() as bars:
        def progress(stage, done, total, info):
            bars(stage, done, total, info)
            if "subject" in info:
                took = f" in {info['seconds']:.1f} s" if info.get("seconds") is not None and info["status"] == "ok" else ""
                error = f": {info['error']}" if info.get("error") else ""
                console.print(f"{info['subject']}: {marks[info['status']]}{took}{error}")

        outcomes = run_study(study, Path(args.out), address=args.address, workers=args.workers,
                             cpus_per_subject=args.cpus_per_subject, gpus_per_subject=args.gpus_per_subject,
                             sequential=args.sequential, redo=args.redo, progress=progress)

    table = Table(title=f"{study.path.name}: {len(outcomes)} subject(s)")
    for col in ("subject", "trial", "status", "s", "marker RMS mm", "GC_5", "GC_10"):
        table.add_column(col, justify="left" if col in ("subject", "trial", "status") else "right")
    for row in summary_rows(study, outcomes):
        table.add_row(row["subject"], row["trial"], row["status"], row["seconds"], row["marker_rms_mm"], row["gc5"],
                      row["gc10"])
    console.print(table)
    failed = [o for o in outcomes.values() if o["status"] == "failed"]
    for o in failed:
        console.print(f"[red]{o['subject']}[/]: {o['error']}")
    console.print(f"summary in [bold]{Path(args.out) / SUMMARY}[/]"
                  + (f"; {len(failed)} subject(s) failed (exit status 1)" if failed else ""))
    return 1 if failed else 0


def run_study(study: Study, out: Path, *, address: str | None = None, workers: int | None = None,
              cpus_per_subject: float = 1.0, gpus_per_subject: float = 0.0, sequential: bool = False,
              redo: bool = False, progress: Callable | None = None) -> dict[str, dict]:
    """Fit the study's subjects that are not finished and write ``summary.csv`` into ``out``.

    Args:
        address: a Ray cluster's address; None starts Ray on this machine (or uses the Ray this
            process already joined) with ``workers`` × ``cpus_per_subject`` CPUs.
        cpus_per_subject, gpus_per_subject: what Ray reserves for one subject's task.
        sequential: run in this process, one subject after another, without Ray.
        redo: ignore the manifests of finished subjects.
        progress: ``progress("subjects", done, total, info)`` at the start (``info`` empty) and
            as each subject is done, skipped or fails (``info``: subject, status, seconds, error).

    Returns:
        subject name -> outcome (subject, kind, status ``ok``/``skipped``/``failed``, seconds,
        peak_rss_mb, scales, rows (one per trial), error), in the study's order.
    """
    if sequential and (address is not None or workers is not None):
        raise InputError("--sequential runs without Ray: drop --address and --workers")
    if address is not None and workers is not None:
        raise InputError("--workers sizes the Ray started on this machine; a cluster (--address) has its own")
    if workers is not None and workers < 1:
        raise InputError(f"--workers: expected at least 1, got {workers}")
    if cpus_per_subject <= 0 or gpus_per_subject < 0:
        raise InputError(f"--cpus-per-subject must be positive and --gpus-per-subject not negative, got "
                         f"{cpus_per_subject:g} and {gpus_per_subject:g}")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or (lambda *a: None)
    total = len(study.subjects)
    outcomes: dict[str, dict] = {}
    decided: list[tuple[Subject, dict]] = []  # skipped, or failed before running
    pending: list[tuple[Subject, str]] = []
    for subject in study.subjects:
        try:
            key = digest(subject)
        except OSError as e:
            decided.append((subject, _failed(subject, _one_line(e))))
            continue
        manifest = None if redo else finished(out / subject.name, key)
        if manifest is None:
            pending.append((subject, key))
        else:
            decided.append((subject, {**_outcome(subject, manifest), "status": "skipped"}))

    def report(subject: Subject, outcome: dict) -> None:
        outcomes[subject.name] = outcome
        write_summary(out / SUMMARY, study, outcomes)
        info = {k: outcome.get(k) for k in ("status", "seconds", "error")}
        progress("subjects", len(outcomes), total, {"subject": subject.name, **info})

    progress("subjects", 0, total, {})
    for subject, outcome in decided:
        report(subject, outcome)
    try:
        if sequential:
            for subject, key in pending:
                report(subject, run_subject(subject, out / subject.name, key))
        elif pending:
            _run_on_ray(pending, out, address, workers, cpus_per_subject, gpus_per_subject, report)
    finally:
        write_summary(out / SUMMARY, study, outcomes)
    return {s.name: outcomes[s.name] for s in study.subjects}


def _run_on_ray(pending, out: Path, address, workers, cpus, gpus, report) -> None:
    """Each pending subject as one Ray task; ``report(subject, outcome)`` as each ends."""
    import ray

    started = not ray.is_initialized()
    if started:
        import logging

        if address is not None:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=None if workers is None else math.ceil(workers * cpus), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
    task = ray.remote(run_subject).options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                           runtime_env={"env_vars": _worker_environment(cpus)})
    running: dict = {}
    try:
        for subject, key in pending:
            running[task.remote(subject, out / subject.name, key)] = subject
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                subject = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died (out of memory, killed)
                    outcome = _failed(subject, _one_line(e))
                report(subject, outcome)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _worker_environment(cpus: float) -> dict[str, str]:
    """Environment of a subject's Ray worker: the driver's JAX precision and compilation cache,
    and XLA's CPU threads limited to the task's CPUs (more would contend with the other tasks)."""
    import jax

    threads = max(1, int(cpus))
    flags = f"--xla_cpu_multi_thread_eigen={str(threads > 1).lower()} intra_op_parallelism_threads={threads}"
    env = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip(),
           "JAX_ENABLE_X64": "1" if jax.config.jax_enable_x64 else "0"}
    if jax.config.jax_compilation_cache_dir and jax.config.jax_enable_compilation_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(jax.config.jax_compilation_cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(jax.config.jax_persistent_cache_min_compile_time_secs)
    return env


def run_subject(subject: Subject, folder: Path, key: str) -> dict:
    """Fit one subject and write its outputs, then its manifest, into ``folder``; a failure is
    returned as an outcome (``status`` ``failed``, the error in one line) with the traceback in
    ``folder/error.txt``. ``key`` is the subject's :func:`~mjx_biomech.cli.study.digest`."""
    import resource

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, ERROR_FILE):
        (folder / name).unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        scales, rows = (_markerless if subject.kind == MARKERLESS else _marker_based)(subject, folder)
    except Exception as e:  # noqa: BLE001 -- one subject's failure must not stop the study
        write_text_atomic(folder / ERROR_FILE, traceback.format_exc())
        return _failed(subject, _one_line(e), time.perf_counter() - start)
    # ru_maxrss is in KiB on Linux; a reused worker's peak covers its earlier subjects too.
    record = {"seconds": time.perf_counter() - start,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "scales": scales, "rows": rows}
    return _outcome(subject, write_manifest(folder, subject, key, record))


def _markerless(subject: Subject, folder: Path) -> tuple[dict, list[dict]]:
    """``mjx-biomech fit`` of the subject: its scales and GC_5/GC_10 per trial."""
    import numpy as np

    from converters import fit_output
    from mjx_biomech.cli.fit import fit_from_args

    result = fit_from_args(subject.with_out(folder))
    fit_output.save(result, folder)
    scales = dict(zip(result.model.scale_param_names, np.asarray(result.params.scales, float).tolist()))
    rows = [{"trial": name, "gc5": t["gc5"], "gc10": t["gc10"]} for name, t in result.metrics["trials"].items()]
    return scales, rows


def _marker_based(subject: Subject, folder: Path) -> tuple[dict, list[dict]]:
    """``mjx-biomech scale`` of the subject: its scales and the marker RMS of each trial (static first)."""
    from converters import ik_output
    from mjx_biomech.cli.scale import scale_from_args

    result, _, _ = scale_from_args(subject.with_out(folder))
    trials = ([result.static] if result.static is not None else []) + list(result.trials)
    rows = [{"trial": t.name, "marker_rms_mm": 1000 * ik_output.marker_report(t)["marker_rms_m"]} for t in trials]
    return {k: float(v) for k, v in result.scales.items()}, rows


def _outcome(subject: Subject, manifest: dict) -> dict:
    return {"subject": subject.name, "kind": subject.kind, "status": "ok", "seconds": manifest["seconds"],
            "peak_rss_mb": manifest.get("peak_rss_mb"), "scales": manifest["scales"], "rows": manifest["rows"],
            "error": None}


def _failed(subject: Subject, message: str, seconds: float | None = None) -> dict:
    return {"subject": subject.name, "kind": subject.kind, "status": "failed", "seconds": seconds, "peak_rss_mb": None,
            "scales": {}, "rows": [], "error": message}


def _one_line(e: BaseException) -> str:
    """An exception as one line: an input or file error as its message, anything else with its type."""
    if isinstance(e, OSError) and e.filename:
        text = f"{e.filename}: {e.strerror or e}"
    elif isinstance(e, (InputError, OSError)):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def summary_rows(study: Study, outcomes: dict[str, dict]) -> list[dict[str, str]]:
    """One row per trial of every subject (one row for a failed or pending subject), as text."""
    def number(value, digits):
        return "" if value is None else f"{value:.{digits}f}"

    rows = []
    for subject in study.subjects:
        o = outcomes.get(subject.name) or {"kind": subject.kind, "status": "pending", "seconds": None, "rows": [],
                                           "scales": {}, "error": None}
        base = {"subject": subject.name, "kind": o["kind"], "status": o["status"], "seconds": number(o["seconds"], 1),
                "error": o["error"] or "", **{f"scale_{k}": f"{v:.5f}" for k, v in o["scales"].items()}}
        for trial in o["rows"] or [{}]:
            rows.append({**base, "trial": trial.get("trial", ""), "marker_rms_mm": number(trial.get("marker_rms_mm"), 2),
                         "gc5": number(trial.get("gc5"), 3), "gc10": number(trial.get("gc10"), 3)})
    return rows


def write_summary(path: Path, study: Study, outcomes: dict[str, dict]) -> Path:
    """``summary.csv`` (atomically): the columns of :data:`_COLUMNS`, then ``scale_<name>`` columns
    in the order the subjects name them."""
    rows = summary_rows(study, outcomes)
    scales = list(dict.fromkeys(k for row in rows for k in row if k.startswith("scale_")))
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=[*_COLUMNS, *scales], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path

