"""Population fit: time per step with the subjects split over 2 devices vs on 1.

Without a device count in ``XLA_FLAGS`` the host CPU is split into 2 XLA devices
(``--xla_force_host_platform_device_count=2``), so on a CPU machine both runs share the same
cores and the split may not be faster; on a node with several accelerators it measures the
data-parallel gain. The population: synthetic people walking 1 s at 30 fps in an 8-camera
ring, BML-MoVi markers. Each step's loss is waited for, and a run's time per step is the
median over its steps after the first (which compiles).

    python benchmarks/population.py [--people N] [--batch-size N] [--steps N]
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

import argparse
import time

import jax
import numpy as np

import mjx_biomech
from mjx_biomech.capture import synthetic
from mjx_biomech.fitting.population import fit_population

MARKERS = "bml_movi_87"


def seconds_per_step(model, subjects, devices, batch_size: int, steps: int) -> tuple[float, np.ndarray]:
    stamps = []

    def progress(stage, done, total, info):
        if done:
            info["loss"].block_until_ready()
            stamps.append(time.perf_counter())

    result = fit_population(model, subjects, MARKERS, steps=steps, batch_size=batch_size, devices=devices,
                            progress=progress)
    return float(np.median(np.diff(stamps))), result.loss_history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    devices = jax.devices()
    if len(devices) < 2:
        raise SystemExit(f"needs 2 devices, found {len(devices)} (XLA_FLAGS={os.environ.get('XLA_FLAGS')!r})")
    model = mjx_biomech.load_model()
    rig = synthetic.ring_rig()
    subjects = []
    for s in range(args.people):
        times, coords = synthetic.walking(model, duration=1.0, fps=30.0, seed=100 + s)
        person = synthetic.person(model, seed=200 + s, marker_set=MARKERS, offset_range_m=(0.0, 0.005))
        subjects.append((synthetic.capture(model, person, times, coords, rig, MARKERS, seed=300 + s), rig))
    one, loss_one = seconds_per_step(model, subjects, devices[:1], args.batch_size, args.steps)
    two, loss_two = seconds_per_step(model, subjects, devices[:2], args.batch_size, args.steps)
    gap = float(np.max(np.abs(loss_two - loss_one) / np.abs(loss_one)))
    print(f"{'devices':>7s} {'ms/step':>8s}")
    print(f"{1:7d} {1e3 * one:8.1f}")
    print(f"{2:7d} {1e3 * two:8.1f}")
    print(f"device: {devices[0].device_kind}; float{'64' if jax.config.jax_enable_x64 else '32'}; "
          f"{args.people} people, minibatch {args.batch_size}")
    print(f"ms_per_step_1={1e3 * one:.2f} ms_per_step_2={1e3 * two:.2f} speedup_2_vs_1={one / two:.2f} "
          f"loss_rel_gap={gap:.1e}")


if __name__ == "__main__":
    main()
