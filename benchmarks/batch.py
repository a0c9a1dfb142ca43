"""A study of 8 synthetic subjects: one after another in this process vs on Ray with 2 workers.

Four markerless subjects (``mjx-biomech fit``: 4 cameras, AdamW on a spline) and four
marker-based ones (``mjx-biomech scale``: static and motion .trc) of the small legs model of
``tests/study_data.py``, each a different person, run by ``mjx-biomech batch``'s
:func:`~mjx_biomech.cli.batch.run_study` twice, in fresh output folders: ``--sequential`` (this
process, XLA on every core) and on a local Ray with ``--workers`` (default 2) workers of one CPU
each. Printed: wall time of each, the throughput ratio (sequential time / Ray time), the mean
time of a subject in each (a Ray worker's subject shares the machine with the others), each
worker's peak memory, and whether both runs found the same scales. How it would scale: with one
free core per worker, throughput grows by up to ``workers`` × (sequential per-subject time / Ray
per-subject time), and memory by one worker's peak per worker.

Run: ``python benchmarks/batch.py [--subjects 8] [--workers 2] [--frames 15] [--steps 100]``
(needs ``ray``, the [batch] extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic study of the tests

from study_data import write_study

from mjx_biomech.cli.batch import run_study
from mjx_biomech.cli.study import read_study


def _run(study, out: Path, **options) -> tuple[float, dict]:
    def progress(stage, done, total, info):
        if "subject" in info:
            print(f"  {info['subject']}: {info['status']} ({info['seconds'] or 0:.1f} s) [{done}/{total}]", flush=True)

    start = time.perf_counter()
    outcomes = run_study(study, out, progress=progress, **options)
    return time.perf_counter() - start, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8, help="half markerless, half marker-based")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=15, help="frames of each trial (30 fps)")
    parser.add_argument("--steps", type=int, default=100, help="AdamW steps of a markerless fit")
    args = parser.parse_args()
    import ray  # noqa: F401 -- fail here, before minutes of sequential fits, when the [batch] extra is missing

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        markerless = args.subjects // 2
        path = write_study(folder, markerless=markerless, marker_based=args.subjects - markerless, frames=args.frames,
                           steps=args.steps)
        study = read_study(path)
        print(f"{len(study.subjects)} subjects ({markerless} markerless, {args.subjects - markerless} marker-based), "
              f"{args.frames} frames, {args.steps} steps; sequential:")
        sequential_s, sequential = _run(study, folder / "sequential", sequential=True)
        print(f"on Ray, {args.workers} workers:")
        ray_s, on_ray = _run(study, folder / "ray", workers=args.workers)

    failed = {n: r["error"] for o in (sequential, on_ray) for n, r in o.items() if r["status"] != "ok"}
    if failed:
        raise SystemExit("subjects failed: " + "; ".join(f"{n}: {e[:300]}" for n, e in failed.items()))
    per_seq = np.mean([o["seconds"] for o in sequential.values()])
    per_ray = np.mean([o["seconds"] for o in on_ray.values()])
    rss_seq = max(o["peak_rss_mb"] for o in sequential.values())
    rss_ray = max(o["peak_rss_mb"] for o in on_ray.values())
    scale_diff = max(abs(sequential[n]["scales"][k] - on_ray[n]["scales"][k]) for n in sequential for k in sequential[n]["scales"])
    ratio = sequential_s / ray_s
    print(f"sequential: {sequential_s:.1f} s ({per_seq:.1f} s per subject, process peak {rss_seq:.0f} MB)")
    print(f"Ray, {args.workers} workers: {ray_s:.1f} s ({per_ray:.1f} s per subject, worker peak {rss_ray:.0f} MB)")
    print(f"throughput {ratio:.2f}x the sequential run's; largest scale difference between the runs {scale_diff:.2e}")
    print(f"scaling: with a free core per worker, up to {args.workers * per_seq / per_ray:.2f}x at {args.workers} workers "
          f"and about {rss_ray:.0f} MB per worker")
    print(f"subjects={len(study.subjects)} workers={args.workers} sequential_s={sequential_s:.1f} ray_s={ray_s:.1f} "
          f"throughput_ratio={ratio:.2f} per_subject_sequential_s={per_seq:.1f} per_subject_ray_s={per_ray:.1f} "
          f"worker_peak_rss_mb={rss_ray:.0f} max_scale_difference={scale_diff:.2e}")


if __name__ == "__main__":
    main()
