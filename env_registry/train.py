"""``mjx-biomech train``: train a gait-imitation policy with brax PPO on the MJX environment.

``--config paper`` uses the paper's hyper-parameters (policy 8×256, value 8×1024, entropy cost
0.003, clipping 0.2, γ = 0.99, 4096 environments: a GPU job); ``--config small`` is sized for a
CPU (128 environments, 100-step episodes, 1.5 M steps, a policy that starts at the zero action;
``reference_pd`` control with a 2 Hz pelvis assist and a 1000 N / 300 N·m pelvis residual, see
:data:`ENVIRONMENTS`). The output folder receives ``policy.pkl`` (normaliser, policy and value parameters, brax's
pickle format), ``config.json`` (environment, training and network settings, all that
:mod:`.evaluate` needs), ``checkpoints/step_<n>.pkl`` during training, and the return curve:
``training.json`` (mean return, episode length, falls, unstable episodes and residual force of
the last 100 training episodes, about 40 times over the run; brax's deterministic evaluation
returns with ``--eval-episodes``) and ``return_curve.png``. An existing ``policy.pkl`` is never
overwritten.
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

# Points of the return curve over a run.
CURVE_POINTS = 40
# With --assist-final below 1, the pelvis assist is annealed over this fraction of the training steps.
ANNEAL_FRACTION = 0.75

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
        eval_episodes=128,
    ),
    "small": dict(
        num_timesteps=1_500_000,
        num_envs=128,
        episode_length=100,
        policy_hidden=(64, 64),
        value_hidden=(128, 128),
        entropy_cost=0.003,
        clipping_epsilon=0.2,
        discounting=0.97,
        learning_rate=3e-4,
        unroll_length=10,
        batch_size=32,
        num_minibatches=4,
        num_updates_per_batch=8,
        # The policy starts at the zero action (the reference_pd controller) and explores gently
        # around it: Gaussian actions, standard deviation 0.1, output layer zero.
        distribution="normal",
        init_noise_std=0.1,
        zero_mean_init=True,
        normalize_observations=True,
        # One training epoch: the return curve comes from the training episodes, and brax's
        # evaluator, which compiles an episode rollout of its own, is off.
        num_evals=2,
        eval_episodes=0,
    ),
}


# Environment settings per named configuration, over GaitImitationConfig's (the paper's) defaults;
# the command line's flags override both. On a CPU budget the policy refines a controller that
# already follows the reference (PD around it, stiff joints, the pelvis assisted towards it), rather
# than first learning not to fall.
ENVIRONMENTS: dict[str, dict] = {
    "paper": {},
    "small": dict(
        control="reference_pd", residual_force=1000.0, residual_torque=300.0, torque_scale=3.0, kp_max=3000.0,
        damping_time=0.02, assist_frequency=2.0,
    ),
}


def network_factory(policy_hidden, value_hidden, init_noise_std: float = 1.0, distribution: str = "tanh_normal", zero_mean_init: bool = False):
    """brax's PPO networks. ``distribution="normal"``: Gaussian actions (clipped by the
    environment) whose standard deviation starts at ``init_noise_std`` (brax's default
    ``"tanh_normal"`` ignores it: its spread starts near 0.7); ``zero_mean_init``: the policy's
    mean starts at exactly zero (its output layer's weights zero), i.e. at the zero action."""
    import jax
    from brax.training.agents.ppo import networks as ppo_networks

    return functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=tuple(policy_hidden),
        value_hidden_layer_sizes=tuple(value_hidden),
        init_noise_std=init_noise_std,
        distribution_type=distribution,
        **({"mean_kernel_init_fn": jax.nn.initializers.constant, "mean_kernel_init_kwargs": {"value": 0.0}} if zero_mean_init else {}),
    )


NETWORK_OPTIONS = ("init_noise_std", "distribution", "zero_mean_init")


def network_options(settings: dict, pop: bool = False) -> dict:
    """The :func:`network_factory` keywords among ``settings`` (removed from it when ``pop``)."""
    return {k: (settings.pop(k) if pop else settings[k]) for k in NETWORK_OPTIONS if k in settings}


def train_policy(env, settings: dict, seed: int = 0, progress_fn=None, checkpoint_dir: Path | None = None):
    """Run brax PPO on ``env`` with ``settings`` (a :data:`CONFIGS` entry, possibly edited).

    Returns ``(make_policy, params)``; ``make_policy(params, deterministic=True)`` is the policy.
    ``progress_fn(step, metrics)`` receives the training episodes' metrics (``episode/…``, means
    over the last 100 episodes) every ``num_timesteps / CURVE_POINTS`` steps, and, when
    ``eval_episodes`` > 0, brax's deterministic evaluation (``eval/…``) after each of
    ``num_evals − 1`` training epochs; with ``checkpoint_dir`` the parameters are pickled there
    after each epoch.
    """
    from brax.training.agents.ppo import train as ppo

    s = dict(settings)
    factory = network_factory(*(s.pop(k) for k in ("policy_hidden", "value_hidden")), **network_options(s, pop=True))
    eval_episodes = s.pop("eval_episodes", 0)
    s.setdefault("training_metrics_steps", max(s["num_timesteps"] // CURVE_POINTS, 1))

    def save_checkpoint(step, _make_policy, params):
        if checkpoint_dir is not None:
            save_params(checkpoint_dir / f"step_{step:09d}.pkl", params)

    make_policy, params, _ = ppo.train(
        environment=env,
        network_factory=factory,
        seed=seed,
        run_evals=eval_episodes > 0,
        num_eval_envs=max(eval_episodes, 1),
        deterministic_eval=True,
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
    parser.add_argument("--reward", choices=REWARDS, help="reward form (default: the config's)")
    parser.add_argument("--control", choices=CONTROLS, help="'torque' or 'pd' (default: the config's)")
    parser.add_argument("--future-frames", type=int, help="future reference frames observed (default: the config's)")
    parser.add_argument("--residual-force", type=float, help="N per unit control of the pelvis translation motors (default: the config's)")
    parser.add_argument("--residual-torque", type=float, help="N·m per unit control of the pelvis rotation motors (default: the config's)")
    parser.add_argument("--assist-frequency", type=float,
                        help="reference_pd: natural frequency (Hz) of the pelvis assist towards the reference, 0 for none (default: the config's)")  # fmt: skip
    parser.add_argument("--assist-final", type=float,
                        help="reference_pd: strength of the pelvis assist left at the end of training, a fraction in [0, 1]; below 1 the "
                        f"assist falls linearly to it over the first {ANNEAL_FRACTION:.0%} of the steps (default: the config's)")  # fmt: skip
    parser.add_argument("--one-body", action="store_true",
                        help="the unscaled body walks every trajectory (default: each person's own body)")
    parser.add_argument("--num-envs", type=int, help="parallel environments (default: the config's)")
    parser.add_argument("--episode-length", type=int, help="control steps before a training episode is cut (default: the config's)")
    parser.add_argument("--eval-episodes", type=int,
                        help="deterministic evaluation episodes after each training epoch, 0 for none (default: the config's)")  # fmt: skip
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
    for name, least in (("num_envs", 1), ("episode_length", 1), ("eval_episodes", 0)):
        value = getattr(args, name)
        if value is not None:
            if value < least:
                raise InputError(f"--{name.replace('_', '-')}: expected an integer ≥ {least}, got {value}")
            settings[name] = value
    env_fields = dict(ENVIRONMENTS[args.config], model=args.model)
    for name in ("reward", "control", "future_frames", "residual_force", "residual_torque", "assist_frequency", "assist_final"):
        if getattr(args, name) is not None:
            env_fields[name] = getattr(args, name)
    if env_fields.get("assist_final", 1.0) < 1.0:
        env_fields["assist_anneal_steps"] = max(int(ANNEAL_FRACTION * settings["num_timesteps"] / settings["num_envs"]), 1)
    if args.one_body:
        env_fields["per_person_body"] = False
    env_config = GaitImitationConfig(**env_fields)
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

    curve: list[dict] = []
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as progress:  # fmt: skip
        task = progress.add_task("train", total=settings["num_timesteps"], info="compiling, then training…")

        def progress_fn(step, metrics):
            point = curve_point(step, metrics)
            if point is None:
                return
            curve.append(point)
            info = f"return {point['return']:.2f}" if "return" in point else f"eval return {point['eval_return']:.2f}"
            progress.update(task, completed=step, info=info)

        _, params = train_policy(env, settings, seed=args.seed, progress_fn=progress_fn, checkpoint_dir=out / "checkpoints")
    save_params(out / "policy.pkl", params)
    write_text_atomic(out / "training.json", json.dumps({"curve": curve}, indent=2))
    plot_return_curve(curve, out / "return_curve.png")
    print_curve(curve)
    print(f"policy: {out / 'policy.pkl'}\nconfig: {out / 'config.json'}\nreturn curve: {out / 'return_curve.png'}")
    return 0


def curve_point(step: int, metrics: dict) -> dict | None:
    """One point of the return curve from brax's progress metrics (None if they hold no episode):
    mean return, episode length, fraction of episodes ended by a fall or an unstable state (NaN or
    a velocity above ``max_speed``) and mean residual force (fraction of body weight) of the
    training episodes; or the deterministic evaluation's mean return."""
    if "episode/sum_reward" in metrics:
        return {
            "step": int(step),
            "return": float(metrics["episode/sum_reward"]),
            "length": float(metrics["episode/length"]),
            "fallen": float(metrics["episode/fallen"]),
            "unstable": float(metrics["episode/unstable"]),
            "residual_force": float(metrics["episode/residual_force_per_step"]),
            **({"assist": float(metrics["episode/assist_per_step"])} if "episode/assist_per_step" in metrics else {}),
        }
    if "eval/episode_reward" in metrics:
        return {"step": int(step), "eval_return": float(metrics["eval/episode_reward"]),
                "eval_unstable": float(metrics["eval/episode_unstable"])}  # fmt: skip
    return None


def print_curve(curve: list[dict]) -> None:
    """The return curve as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="return curve (training episodes: means over the last 100)")
    columns = {"return": "return", "length": "episode length", "fallen": "falls", "unstable": "unstable",
               "residual_force": "residual force (× body weight)", "assist": "pelvis assist", "eval_return": "eval return"}  # fmt: skip
    shown = [k for k in columns if any(k in p for p in curve)]
    table.add_column("steps", justify="right")
    for k in shown:
        table.add_column(columns[k], justify="right")
    for p in curve:
        cells = [f"{p[k]:.2f}" if k in p else "" for k in shown]
        table.add_row(f"{p['step']:,}", *cells)
    Console().print(table)


def plot_return_curve(curve: list[dict], path: Path) -> Path:
    """PNG of the mean training-episode return (and evaluation return, if any) over steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in (("return", "training episodes (last 100)"), ("eval_return", "deterministic evaluation")):
        points = [(p["step"], p[key]) for p in curve if key in p]
        if points:
            ax.plot(*zip(*points), "o-", label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
