"""Environment and physics steps per second: our gait-imitation environment against brax's
``humanoid`` and MuJoCo Playground's ``HumanoidWalk``, in the same process, and against itself
with one body for every trajectory (``per_person_body=False``) instead of each person's own.

``python benchmarks/env.py [--num-envs 64] [--steps 20] [--profile]``. Every environment runs on
MJX (brax ``backend="mjx"``, Playground ``impl="jax"``), wrapped as its framework's PPO trains it
(brax: ``envs.training.wrap``; Playground: ``wrap_for_brax_training``; time limit 1000 steps,
auto-reset, vmap over the same number of environments), with zero actions. Each is warmed up
before it is timed: weak types are stripped from the reset state and from every step's state,
as brax's trainer does, and the jitted step runs twice; the step must then have compiled
exactly once, and must not compile again in the timed loop (both asserted). Ours does 16 physics steps per control step (30 Hz),
the two humanoids 5, so physics steps per second are printed too, and the ratios of both.

``--profile`` times the parts of our step: the 16 physics steps alone, the same without
contacts, the fresh start drawn for the auto-reset, and the rest (controls, kinematics,
observation, reward).
"""

from __future__ import annotations

import argparse
import time


def _strip_weak_type(tree):
    """``tree`` with weakly typed arrays made strong, as brax's PPO trainer does to its states."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: jnp.astype(jnp.asarray(x), jnp.asarray(x).dtype), tree)


def _timed(step, state, action, steps: int) -> tuple[float, object]:
    import jax

    start = time.perf_counter()
    for _ in range(steps):
        state = step(state, action)
    jax.block_until_ready(state)
    return time.perf_counter() - start, state


def _measure(env, num_envs: int, steps: int) -> dict:
    """Compile (reset and two steps) and time ``steps`` steps of the wrapped, vmapped ``env``."""
    import jax
    import jax.numpy as jnp

    # Inside brax's training scan the state's types are fixed; a Python loop must fix them too:
    # brax humanoid's step returns weakly typed ``done`` and ``reward_alive``, which would compile
    # the step a second time.
    reset, step = jax.jit(env.reset), jax.jit(lambda s, a: _strip_weak_type(env.step(s, a)))
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    action = jnp.zeros((num_envs, env.action_size))
    start = time.perf_counter()
    state = _strip_weak_type(reset(keys))
    state = step(step(state, action), action)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    compiled = step._cache_size()
    assert compiled == 1, f"the step compiled {compiled} times during warm-up"
    elapsed, _ = _timed(step, state, action, steps)
    assert step._cache_size() == 1, "the step compiled again inside the timed loop"
    return {"compile_s": compile_s, "env_steps_per_s": num_envs * steps / elapsed}


def _profile(env, num_envs: int, steps: int) -> None:
    """Milliseconds per control step of the parts of our environment's step (vmapped, jitted)."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    substeps = env.task.config.substeps
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), num_envs))
    action = jnp.zeros((num_envs, env.action_size))
    no_contacts = env.sys.replace(opt=env.sys.opt.replace(disableflags=env.sys.opt.disableflags | mjx.DisableBit.CONTACT))

    def physics(system):
        def run(data):
            return jax.lax.scan(lambda d, _: (mjx.step(system, d), None), data, None, length=substeps)[0]

        return jax.jit(jax.vmap(run))

    parts = {
        "whole step (without auto-reset)": (jax.jit(jax.vmap(env.step)), (state, action)),
        f"{substeps} physics steps": (physics(env.sys), (state.pipeline_state,)),
        f"{substeps} physics steps without contacts": (physics(no_contacts), (state.pipeline_state,)),
        "a fresh start (drawn every step for auto-reset)": (
            jax.jit(jax.vmap(env.reset)), (jax.random.split(jax.random.PRNGKey(1), num_envs),)
        ),
    }
    ms = {}
    for name, (fn, args) in parts.items():
        jax.block_until_ready(fn(*args))
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        ms[name] = 1000 * (time.perf_counter() - start) / steps
    ms["rest: controls, kinematics, observation, reward"] = ms["whole step (without auto-reset)"] - ms[f"{substeps} physics steps"]
    print(f"profile of our control step, {num_envs} environments (ms per step):")
    for name, value in ms.items():
        print(f"  {name:50s} {value:8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reference", default="synthetic:2")
    parser.add_argument("--profile", action="store_true", help="also time the parts of our step")
    args = parser.parse_args(argv)

    import importlib.util

    import jax
    from brax import envs
    from brax.envs.wrappers import training

    import env_registry

    ours = envs.get_environment(env_registry.BRAX_NAME, reference=args.reference)
    # The same environment with one body for every trajectory, instead of each person's own.
    one_body = envs.get_environment(env_registry.BRAX_NAME, reference=args.reference, per_person_body=False)
    humanoid = envs.get_environment("humanoid", backend="mjx")
    candidates = [
        ("ours (mjx_biomech_gait_imitation)", training.wrap(ours, episode_length=1000), ours.task.config.substeps),
        ("ours, one body (per_person_body=False)", training.wrap(one_body, episode_length=1000), one_body.task.config.substeps),
        ("brax humanoid (mjx)", training.wrap(humanoid, episode_length=1000), humanoid._n_frames),
    ]
    if importlib.util.find_spec("mujoco_playground") is not None:
        from mujoco_playground import registry, wrapper

        walk = registry.load("HumanoidWalk", config_overrides={"impl": "jax"})
        candidates.append(("Playground HumanoidWalk (jax)", wrapper.wrap_for_brax_training(walk, episode_length=1000), walk.n_substeps))
    print(f"device: {jax.devices()[0]}, {args.num_envs} environments, {args.steps} timed steps each")
    results = {}
    for name, env, substeps in candidates:
        r = _measure(env, args.num_envs, args.steps)
        r["physics_steps_per_s"] = r["env_steps_per_s"] * substeps
        results[name] = r
        print(
            f"{name:40s} compile {r['compile_s']:6.1f} s   {r['env_steps_per_s']:9.0f} env steps/s   "
            f"{r['physics_steps_per_s']:10.0f} physics steps/s ({substeps} per step)"
        )
    ours_r = results[candidates[0][0]]
    for name, _, _ in candidates[1:]:
        r = results[name]
        print(
            f"ratio ours / {name}: {ours_r['env_steps_per_s'] / r['env_steps_per_s']:.2f}× env steps/s, "
            f"{ours_r['physics_steps_per_s'] / r['physics_steps_per_s']:.2f}× physics steps/s"
        )
    if args.profile:
        _profile(ours, args.num_envs, args.steps)


if __name__ == "__main__":
    main()
