"""Does ``mjx-biomech train --config small`` learn with its defaults? Issue 12's must-show 1, measured.

``python benchmarks/train_small.py [--out DIR] [--steps N] [--assist-final F]`` runs
``mjx-biomech train --config small`` with no other flags (or the given ones) into a new folder,
timing it (wall clock, compilation included), then evaluates on the two held-out synthetic walkers
``synthetic:2:1000`` as ``mjx-biomech evaluate`` does (MuJoCo's C engine, from frame 0, no reset
noise) both the trained policy and the zero action — the controller the policy starts from (PD to
the reference, plus the pelvis assist of the small config) — so that what training added is
visible. Printed per walker and as the issue's criteria: share of the reference followed, hip and
knee flexion RMSE after the first 45 frames, walking speed error, mean residual force as a
fraction of body weight. Last line::

    train_minutes=<> followed_min=<> hip_knee_rmse_max_deg=<> speed_error_max_pct=<> residual_force_bw=<>
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

JOINTS = ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l")
HELD_OUT = "synthetic:2:1000"


def _evaluate(env, policy) -> list[dict]:
    from env_registry import evaluate

    return [evaluate.gait_report(env.task, evaluate.rollout(env, policy, n, 0), n) for n in range(env.task.reference.num_trajectories)]


def _criteria(reports: list[dict]) -> dict:
    def worst(key, default=float("nan")):
        values = [abs(r[key]) for r in reports if key in r and r[key] is not None]
        return max(values) if len(values) == len(reports) else default

    return {
        "followed_min": min(r["fraction_followed"] for r in reports),
        "hip_knee_rmse_max_deg": max(worst(f"{j}_rmse_deg") for j in JOINTS),
        "speed_error_max_pct": worst("walking_speed_error_pct"),
        "residual_force_bw": float(np.mean([r["residual_force_body_weight"] for r in reports])),
    }


def _print(label: str, reports: list[dict]) -> dict:
    print(f"{label}:")
    for r in reports:
        joints = " ".join(f"{j} {r.get(f'{j}_rmse_deg', float('nan')):.1f}°" for j in JOINTS)
        print(f"  {r['trajectory']}: followed {100 * r['fraction_followed']:.0f} % ({r['end']}); RMSE {joints}; "
              f"speed error {r.get('walking_speed_error_pct', float('nan')):+.1f} %; "
              f"residual force {r['residual_force_body_weight']:.2f} × body weight")  # fmt: skip
    criteria = _criteria(reports)
    print("  " + " ".join(f"{k}={v:.3f}" for k, v in criteria.items()))
    return criteria


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="training folder (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, help="environment steps (default: the small config's)")
    parser.add_argument("--assist-final", type=float, help="anneal the pelvis assist to this fraction (default: the config's)")
    args = parser.parse_args()

    from env_registry import evaluate, train
    from env_registry.config import GaitImitationConfig
    from env_registry.gym_env import GaitImitationGymEnv

    out = args.out or Path(tempfile.mkdtemp(prefix="train_small_")) / "run"
    train_args = ["--config", "small", "--out", str(out)]
    if args.steps is not None:
        train_args += ["--steps", str(args.steps)]
    if args.assist_final is not None:
        train_args += ["--assist-final", str(args.assist_final)]
    train_parser = argparse.ArgumentParser()
    train.add_arguments(train_parser)
    start = time.perf_counter()
    train.run(train_parser.parse_args(train_args))
    minutes = (time.perf_counter() - start) / 60
    print(f"training: {minutes:.1f} min wall (compilation included), {out}")

    make_policy, params, record = evaluate.load_policy(out)
    env = GaitImitationGymEnv(GaitImitationConfig.from_dict(record["env"]), reference=HELD_OUT)
    zero = _print("zero action (the controller the policy starts from)", _evaluate(env, lambda obs: np.zeros(env.task.action_size)))
    trained = _print("trained policy", _evaluate(env, evaluate.policy_function(make_policy, params)))
    (out / "train_small.json").write_text(json.dumps({"train_minutes": minutes, "zero_action": zero, "trained": trained}, indent=2))
    print(f"train_minutes={minutes:.2f} " + " ".join(f"{k}={v:.3f}" for k, v in trained.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
