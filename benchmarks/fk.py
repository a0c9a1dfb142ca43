"""Forward kinematics of the bundled model: ours (JAX) vs MuJoCo's C engine, same frames, same run.

Prints microseconds per frame for markers (forward), markers + gradient w.r.t. scales, offsets
and coordinates, and markers + their closed-form Jacobian w.r.t. the coordinates, against
``mj_kinematics`` on the statically scaled model. MuJoCo C is timed two ways: the bare call in a
tight loop (the ratios use this one) and a loop that also copies each frame's qpos in and the
sites out (what a Python user of MuJoCo pays per frame). Run:
``python benchmarks/fk.py [--frames 300] [--repeats 20] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from rich.console import Console
from rich.table import Table

import mjx_biomech as mb


def best_seconds(fn, repeats: int) -> float:
    """Best wall seconds of ``repeats`` calls of ``fn`` after a warm-up call (benchmarks/ik.py uses it too)."""
    fn()  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every path (best taken)")
    parser.add_argument("--model", default=None, help="model source (default: the bundled model)")
    parser.add_argument("--marker-set", default=None, help="marker set (default: every site)")
    args = parser.parse_args()

    model = mb.load_model(args.model)
    rng = np.random.default_rng(0)
    params = mb.BodyParams(
        jnp.asarray(rng.uniform(0.9, 1.1, len(model.scale_param_names)), jnp.float32),
        jnp.asarray(rng.uniform(-0.01, 0.01, (len(model.site_names), 3)), jnp.float32),
    )
    coords = mb.sample_coordinates(model, jax.random.PRNGKey(0), args.frames).astype(jnp.float32)
    sites = model.marker_site_ids(args.marker_set)

    markers = jax.jit(jax.vmap(lambda q, p: model.markers(q, p, args.marker_set), in_axes=(0, None)))

    def loss(q, p):
        return jnp.sum(markers(q, p) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    static = model.to_mujoco(params)
    data = mujoco.MjData(static)
    qpos = np.asarray(jax.vmap(model.coords_to_qpos, in_axes=(0, None))(coords, params), dtype=float)

    def mujoco_bare():
        for _ in range(args.frames):
            mujoco.mj_kinematics(static, data)

    def mujoco_c():
        out = np.empty((args.frames, len(sites), 3))
        for k in range(args.frames):
            data.qpos[:] = qpos[k]
            mujoco.mj_kinematics(static, data)
            out[k] = data.site_xpos[sites]
        return out

    jacobian = jax.jit(jax.vmap(lambda q, p: model.marker_jacobian(q, p, sites)[1], in_axes=(0, None)))

    paths = {
        "copy": mujoco_c,
        "c": mujoco_bare,
        "fwd": lambda: markers(coords, params).block_until_ready(),
        "grad": lambda: jax.block_until_ready(value_and_grad(coords, params)),
        "jac": lambda: jacobian(coords, params).block_until_ready(),
    }
    # Interleaved rounds, best of all: a shared machine's load drifts over seconds, and timing
    # one path after the other would charge the drift to whichever ran in the slow stretch.
    best = {name: np.inf for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            best[name] = min(best[name], best_seconds(fn, args.repeats))
    t_copy, t_c, t_fwd, t_grad, t_jac = (best[name] for name in ("copy", "c", "fwd", "grad", "jac"))
    # nothing compiles in the timed calls: each jitted function holds the one program it warmed up
    assert markers._cache_size() == value_and_grad._cache_size() == jacobian._cache_size() == 1

    err = float(np.abs(np.asarray(markers(coords, params)) - mujoco_c()).max())
    per = 1e6 / args.frames
    table = Table(title=f"{model.source}: {args.frames} frames, {len(sites)} markers, {jax.default_backend()} float32")
    for col in ("path", "µs/frame", "vs MuJoCo C"):
        table.add_column(col)
    table.add_row("MuJoCo C mj_kinematics, bare call", f"{t_c * per:.2f}", "1.00")
    table.add_row("MuJoCo C, qpos in and sites out per frame", f"{t_copy * per:.2f}", f"{t_copy / t_c:.2f}")
    table.add_row("mjx_biomech markers (forward)", f"{t_fwd * per:.2f}", f"{t_fwd / t_c:.2f}")
    table.add_row("mjx_biomech markers + gradient (coords, scales, offsets)", f"{t_grad * per:.2f}", f"{t_grad / t_c:.2f}")
    table.add_row("mjx_biomech markers + Jacobian (coords, closed form)", f"{t_jac * per:.2f}", f"{t_jac / t_c:.2f}")
    Console().print(table)
    print(f"max |ours - MuJoCo C| = {err:.2e} m (float32)")
    print(f"ratio_forward_vs_mujoco={t_fwd / t_c:.3f} ratio_grad_vs_mujoco={t_grad / t_c:.3f} "
          f"ratio_jacobian_vs_mujoco={t_jac / t_c:.3f} ratio_copy_loop_vs_bare={t_copy / t_c:.3f}")


if __name__ == "__main__":
    main()
