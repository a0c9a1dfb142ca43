"""Environment steps per second: our gait-imitation environment against brax's ``humanoid``.

``python benchmarks/env.py [--num-envs 64] [--steps 20]``. Both environments run on MJX
(``backend="mjx"``), jitted and vmapped over the same number of environments, with zero actions,
in the same process; compile time is reported apart. Ours does 16 physics steps per control step
(30 Hz), brax's humanoid 5 (67 Hz), so the physics steps per second are printed too.
"""

from __future__ import annotations

import argparse
import time


def _measure(env, num_envs: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    start = time.perf_counter()
    state = reset(keys)
    action = jnp.zeros((num_envs, env.action_size))
    state = step(state, action)
    jax.block_until_ready(state.obs)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state, action)
    jax.block_until_ready(state.obs)
    elapsed = time.perf_counter() - start
    return {"compile_s": compile_s, "env_steps_per_s": num_envs * steps / elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reference", default="synthetic:2")
    args = parser.parse_args(argv)

    import jax
    from brax import envs

    import env_registry

    ours = envs.get_environment(env_registry.BRAX_NAME, reference=args.reference)
    humanoid = envs.get_environment("humanoid", backend="mjx")
    print(f"device: {jax.devices()[0]}, {args.num_envs} environments, {args.steps} steps each")
    results = {}
    for name, env, substeps in (
        ("mjx_biomech_gait_imitation", ours, ours.task.config.substeps),
        ("brax humanoid (mjx)", humanoid, humanoid._n_frames),
    ):
        r = _measure(env, args.num_envs, args.steps)
        results[name] = r
        print(
            f"{name:28s} compile {r['compile_s']:6.1f} s   {r['env_steps_per_s']:10.0f} env steps/s   "
            f"{r['env_steps_per_s'] * substeps:12.0f} physics steps/s ({substeps} per step)"
        )
    a, b = results["mjx_biomech_gait_imitation"], results["brax humanoid (mjx)"]
    print(f"ratio ours / humanoid: {a['env_steps_per_s'] / b['env_steps_per_s']:.2f}× env steps/s")


if __name__ == "__main__":
    main()
