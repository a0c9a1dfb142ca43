"""``mjx-biomech train``: train a gait-imitation policy with brax PPO on the MJX environment.

``--config paper`` uses the paper's hyper-parameters (policy 8×256, value 8×1024, entropy cost
0.003, clipping 0.2, γ = 0.99, 4096 environments: a GPU job); ``--config small`` is sized for a
CPU (32 environments, small networks, short episodes). The output folder receives
``policy.pkl`` (normaliser, policy and value parameters, brax's pickle format), ``config.json``
(environment, training and network settings, all that :mod:`.evaluate` needs) and
``checkpoints/step_<n>.pkl`` during training; an existing ``policy.pkl`` is never overwritten.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
from pathlib import Path

from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic

from .config import CONTROLS, REWARDS, GaitImitationConfig

# PPO settings per named configuration: brax ppo.train keyword arguments plus network sizes.
CONFIGS: dict[str, dict] = {
    "paper": dict(
        num_timesteps=200_000_000,
        num_envs=4096,
        episode_length=1000,
        policy_hidden=(256,) * 8,
        value_hidden=(1024,) * 8,
        entropy_cost=0.003,
        clipping_epsilon=0.2,
        discounting=0.99,
        learning_rate=3e-4,
        unroll_length=20,
        batch_size=512,
        num_minibatches=32,
        num_updates_per_batch=4,
        normalize_observations=True,
        num_evals=20,
    ),
    "small": dict(
        num_timesteps=60_000,
        num_envs=32,
        episode_length=30,
        policy_hidden=(64, 64),
        value_hidden=(128, 128),
        entropy_cost=0.003,
        clipping_epsilon=0.2,
        discounting=0.97,
        learning_rate=1e-3,
        unroll_length=10,
        batch_size=32,
        num_minibatches=4,
        num_updates_per_batch=8,
        # Full-scale random torques topple the body at once; start exploring gently.
        init_noise_std=0.3,
        normalize_observations=True,
        # One training epoch: brax compiles its epoch function again on the second call, which
        # on a CPU costs more than this whole run's training.
        num_evals=2,
    ),
}


def network_factory(policy_hidden, value_hidden, init_noise_std: float = 1.0):
    from brax.training.agents.ppo import networks as ppo_networks

    return functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=tuple(policy_hidden),
        value_hidden_layer_sizes=tuple(value_hidden),
        init_noise_std=init_noise_std,
    )


def train_policy(env, settings: dict, seed: int = 0, progress_fn=None, checkpoint_dir: Path | None = None):
    """Run brax PPO on ``env`` with ``settings`` (a :data:`CONFIGS` entry, possibly edited).

    Returns ``(make_policy, params)``; ``make_policy(params, deterministic=True)`` is the policy.
    ``progress_fn(step, metrics)`` is called after each of ``num_evals − 1`` training epochs;
    with ``checkpoint_dir`` the parameters are pickled there after each epoch.
    """
    from brax.training.agents.ppo import train as ppo

    s = dict(settings)
    factory = network_factory(s.pop("policy_hidden"), s.pop("value_hidden"), s.pop("init_noise_std", 1.0))

    def save_checkpoint(step, _make_policy, params):
        if checkpoint_dir is not None:
            save_params(checkpoint_dir / f"step_{step:09d}.pkl", params)

    make_policy, params, _ = ppo.train(
        environment=env,
        network_factory=factory,
        seed=seed,
        run_evals=False,
        log_training_metrics=True,
        progress_fn=progress_fn or (lambda *a: None),
        policy_params_fn=save_checkpoint,
        **s,
    )
    return make_policy, params


def save_params(path: Path, params) -> Path:
    """Pickle parameters atomically (readable with ``brax.io.model.load_params``)."""
    import jax
    import numpy as np

    with atomic_write(path, "wb") as f:
        f.write(pickle.dumps(jax.tree.map(np.asarray, params)))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small", help="PPO hyper-parameters (default: small)")
    parser.add_argument("--steps", type=int, help="environment steps (default: the config's)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (policy.pkl, config.json, checkpoints/)")
    parser.add_argument("--reference", default="synthetic", help="'synthetic[:N[:FIRST_SEED]]', a .mot file or a fit result folder")
    parser.add_argument("--model", default="lower_body", help="'lower_body', 'fullbody' or an MJCF/.osim path")
    parser.add_argument("--reward", choices=REWARDS, default="exp")
    parser.add_argument("--control", choices=CONTROLS, default="torque")
    parser.add_argument("--future-frames", type=int, default=4)
    parser.add_argument("--residual-force", type=float, default=GaitImitationConfig.residual_force,
                        help="N per unit control of the pelvis translation motors (default: %(default)s)")  # fmt: skip
    parser.add_argument("--num-envs", type=int, help="parallel environments (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Train and write ``policy.pkl`` and ``config.json`` into ``--out``. Bad input raises
    :class:`InputError`; bad arguments do so before brax and MJX are loaded."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out: Path = args.out
    if (out / "policy.pkl").exists():
        raise InputError(f"--out: {out} already holds a trained policy (policy.pkl); choose another folder")
    settings = dict(CONFIGS[args.config])
    if args.steps is not None:
        if args.steps <= 0:
            raise InputError(f"--steps: expected a positive number of environment steps, got {args.steps}")
        settings["num_timesteps"] = args.steps
    if args.num_envs is not None:
        if args.num_envs <= 0:
            raise InputError(f"--num-envs: expected a positive number of parallel environments, got {args.num_envs}")
        settings["num_envs"] = args.num_envs
    env_config = GaitImitationConfig(
        model=args.model,
        reward=args.reward,
        control=args.control,
        future_frames=args.future_frames,
        residual_force=args.residual_force,
    )
    from .mjx_env import GaitImitationEnv

    env = GaitImitationEnv(env_config, reference=args.reference)
    record = {
        "env": env_config.to_dict(),
        "reference": str(args.reference),
        "train_config": args.config,
        "ppo": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "seed": args.seed,
        "observation_size": env.observation_size,
        "action_size": env.action_size,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", json.dumps(record, indent=2))

    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as progress:  # fmt: skip
        task = progress.add_task("train", total=settings["num_timesteps"], info="compiling, then training…")

        def progress_fn(step, metrics):
            reward = metrics.get("episode/sum_reward")
            info = f"episode return {float(reward):.2f}" if reward is not None else ""
            progress.update(task, completed=step, info=info)

        _, params = train_policy(env, settings, seed=args.seed, progress_fn=progress_fn, checkpoint_dir=out / "checkpoints")
    save_params(out / "policy.pkl", params)
    print(f"policy: {out / 'policy.pkl'}\nconfig: {out / 'config.json'}")
    return 0
