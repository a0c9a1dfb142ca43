"""A short PPO run (brax, MJX on CPU) through ``mjx-biomech train`` learns: its deterministic
policy earns a clearly higher return than the zero action from the same start states on MuJoCo's
C engine; training writes its return curve; ``mjx-biomech evaluate`` then reports gait metrics
and plots on a held-out walker. Bad training flags are refused before anything is built."""

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("brax", reason="brax is not installed")
pytest.importorskip("gymnasium", reason="gymnasium is not installed")

from env_registry import evaluate, train  # noqa: E402
from env_registry.config import GaitImitationConfig  # noqa: E402
from env_registry.gym_env import GaitImitationGymEnv  # noqa: E402
from mjx_biomech.errors import InputError  # noqa: E402

EPISODES = 48
HORIZON = 30  # the training episode length of the run below


def _returns(env, policy, action_size):
    """Returns over HORIZON steps from the start states of seeds 0…EPISODES−1."""
    out = []
    for seed in range(EPISODES):
        obs, _ = env.reset(seed=seed)
        total = 0.0
        for _ in range(HORIZON):
            action = policy(obs) if policy is not None else np.zeros(action_size)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            if terminated or truncated:
                break
        out.append(total)
    return np.array(out)


@pytest.mark.slow
def test_short_ppo_run_beats_zero_action_and_evaluates(tmp_path):
    run_dir = tmp_path / "run"
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    # The small config's environment (PD around the reference, 1000 N / 300 N·m pelvis residual)
    # without its pelvis assist, so that the zero action falls within a second and the policy
    # (which starts at the zero action) has to learn to hold the body up; one future frame, 32
    # environments and 30-step episodes: a run that learns in a few minutes.
    args = parser.parse_args(
        ["--config", "small", "--steps", "120000", "--out", str(run_dir), "--reference", "synthetic:2",
         "--future-frames", "1", "--num-envs", "32", "--episode-length", str(HORIZON), "--assist-frequency", "0"]
    )  # fmt: skip
    assert train.run(args) == 0
    assert (run_dir / "policy.pkl").exists() and list((run_dir / "checkpoints").glob("step_*.pkl"))
    curve = json.loads((run_dir / "training.json").read_text())["curve"]
    assert len(curve) >= 10 and all(np.isfinite(p["return"]) and 0 <= p["unstable"] <= 1 for p in curve)
    assert (run_dir / "return_curve.png").stat().st_size > 0

    make_policy, params, record = evaluate.load_policy(run_dir)
    env = GaitImitationGymEnv(GaitImitationConfig.from_dict(record["env"]), reference="synthetic:2")
    trained = _returns(env, evaluate.policy_function(make_policy, params), env.task.action_size)
    zero = _returns(env, None, env.task.action_size)
    stderr = np.sqrt(trained.var() / EPISODES + zero.var() / EPISODES)
    print(f"mean return over {EPISODES} starts: trained {trained.mean():.2f}, zero action {zero.mean():.2f} (±{stderr:.2f})")
    assert trained.mean() > zero.mean() + 3 * stderr

    eval_parser = argparse.ArgumentParser()
    evaluate.add_arguments(eval_parser)
    assert evaluate.run(eval_parser.parse_args([str(run_dir), "--reference", "synthetic:1:1000"])) == 0
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    (result,) = report["trajectories"]
    assert result["trajectory"] == "synthetic:seed1000"
    assert result["frames"] >= 2 and np.isfinite(result["mean_reward"])
    assert sum(report["summary"]["ends"].values()) == 1
    assert (run_dir / "evaluation" / "plots" / "synthetic_seed1000.png").stat().st_size > 0
    # A run never overwrites an earlier one.
    with pytest.raises(Exception, match="already holds"):
        train.run(args)


def test_training_smoke_run_writes_a_policy_that_evaluates(tmp_path):
    """The default suite's quick pass through the whole pipeline: ``mjx-biomech train --config
    small`` for two PPO iterations (2,560 steps, 8 environments), then ``mjx-biomech evaluate``
    on a held-out walker. Nothing is asserted about learning (the slow test above does that)."""
    run_dir = tmp_path / "run"
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = ["--config", "small", "--steps", "2560", "--out", str(run_dir), "--reference", "synthetic:1",
            "--future-frames", "1", "--num-envs", "8", "--episode-length", "8"]  # fmt: skip
    assert train.run(parser.parse_args(args)) == 0
    record = json.loads((run_dir / "config.json").read_text())
    assert record["env"]["control"] == "reference_pd" and record["ppo"]["zero_mean_init"]
    assert (run_dir / "policy.pkl").exists() and (run_dir / "return_curve.png").stat().st_size > 0
    eval_parser = argparse.ArgumentParser()
    evaluate.add_arguments(eval_parser)
    assert evaluate.run(eval_parser.parse_args([str(run_dir), "--reference", "synthetic:1:1000"])) == 0
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    assert report["summary"]["trajectories"] == 1 and np.isfinite(report["trajectories"][0]["residual_force_body_weight"])


@pytest.mark.parametrize(
    "flag, value", [("--episode-length", "0"), ("--eval-episodes", "-1"), ("--num-envs", "0"), ("--steps", "0")]
)
def test_bad_training_flags_are_named(tmp_path, flag, value):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    with pytest.raises(InputError, match=flag):
        train.run(parser.parse_args(["--out", str(tmp_path / "run"), flag, value]))
    assert not (tmp_path / "run").exists()
