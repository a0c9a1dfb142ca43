"""The gait evaluator scores the reference motion, fed in as a perfect rollout, perfectly: joint
RMSE 0, every foot strike matched with 0 ms error, and step length, step width and walking speed
equal to values computed here independently from the reference's heel positions (MuJoCo's C
kinematics of each walker's own statically scaled body on the reference coordinates)."""

import mujoco
import numpy as np
import pytest

pytest.importorskip("brax", reason="brax is not installed")
pytest.importorskip("gymnasium", reason="gymnasium is not installed")

from env_registry import evaluate, people  # noqa: E402
from env_registry.config import GaitImitationConfig  # noqa: E402
from env_registry.gym_env import GaitImitationGymEnv  # noqa: E402
from env_registry.task import make_task  # noqa: E402
from mjx_biomech.capture import synthetic  # noqa: E402

FPS = 30.0
SPEED = 1.3  # m/s, the synthetic walkers' speed


@pytest.fixture(scope="module")
def task():
    return make_task(GaitImitationConfig(), reference="synthetic:2:1000")


def _perfect_rollout(task, n, lag=0):
    """The reference's own states as a rollout of every reachable frame (``lag`` frames behind)."""
    frames = int(task.targets.lengths[n]) - task.config.future_frames
    qpos = task.targets.qpos[n, np.maximum(np.arange(frames) - lag, 0)]
    return {"qpos": qpos, "reward": np.ones(frames - 1), "residual_force": np.zeros(frames - 1), "end": "reference_end"}


def _reference_feet(task, n, frames):
    """Heel sphere centres (T, 3) per side and the pelvis (T, 3), m, from the reference coordinates
    on the walker's own body."""
    params = people.person(task.reference.params, n)
    m = task.body.model.to_mujoco(params)
    d = mujoco.MjData(m)
    heel = {s: np.empty((frames, 3)) for s in "rl"}
    pelvis = np.empty((frames, 3))
    for k in range(frames):
        d.qpos[:] = np.asarray(task.body.model.coords_to_qpos(task.reference.coords[n, k], params))
        mujoco.mj_kinematics(m, d)
        for s in "rl":
            heel[s][k] = d.geom_xpos[m.geom(f"foot_contact_heel_{s}").id]
        pelvis[k] = d.xpos[m.body("pelvis").id]
    return heel, pelvis


@pytest.mark.parametrize("n", [0, 1])
def test_reference_as_rollout_scores_perfectly(task, n):
    sim = _perfect_rollout(task, n)
    report = evaluate.gait_report(task, sim, n)
    frames = len(sim["qpos"])
    assert report["fraction_followed"] == 1.0 and report["end"] == "reference_end"
    for joint in evaluate.JOINTS:
        assert report[f"{joint}_rmse_deg"] == 0.0 and report[f"{joint}_bias_removed_rmse_deg"] == 0.0

    # Strikes: the synthetic walker's right heel strikes at whole gait cycles, its left half a
    # cycle later; each is found within one frame, and matched to itself with 0 ms error.
    stride_frames = 120.0 / synthetic.default_cadence(task.body.model, SPEED, people.person(task.reference.params, n)) * FPS
    for side, offset in (("r", 0.0), ("l", 0.5)):
        nominal = (np.arange(10) + offset) * stride_frames
        nominal = nominal[(nominal >= evaluate.SKIP_FRAMES) & (nominal < frames - 1)]
        found = np.array(report[f"reference_strike_frames_{side}"])
        assert len(found) == len(nominal) >= 2
        assert np.all(np.abs(found - nominal) <= 1.0)
        assert report[f"strike_frames_{side}"] == report[f"reference_strike_frames_{side}"]
        assert report[f"matched_strikes_{side}"] == len(found)
        assert report[f"strike_timing_errors_{side}_s"] == [0.0] * len(found)

    # Step length and width at each strike, and speed per cycle, from the heel positions.
    heel, pelvis = _reference_feet(task, n, int(task.targets.lengths[n]))
    xy = pelvis[:, :2] - pelvis[:, :2].mean(axis=0)
    direction = np.linalg.svd(xy, full_matrices=False)[2][0]
    direction *= np.sign(direction @ (xy[-1] - xy[0]))
    assert direction[0] > np.cos(0.01)  # the walker goes along +X
    lateral = np.array([-direction[1], direction[0]])
    strikes = sorted((f, s) for s in "rl" for f in report[f"reference_strike_frames_{s}"])
    other = {"r": "l", "l": "r"}
    length = [(heel[s][f, :2] - heel[other[s]][f, :2]) @ direction for f, s in strikes]
    width = [abs((heel[s][f, :2] - heel[other[s]][f, :2]) @ lateral) for f, s in strikes]
    cycles = sorted(
        (f0, (heel[s][f1, :2] - heel[s][f0, :2]) @ direction / ((f1 - f0) / FPS))
        for s in "rl"
        for f0, f1 in zip(report[f"reference_strike_frames_{s}"], report[f"reference_strike_frames_{s}"][1:])
    )
    speed = [v for _, v in cycles]
    for prefix in ("", "reference_"):
        np.testing.assert_allclose(report[f"{prefix}step_length_m"], length, atol=1e-9)
        np.testing.assert_allclose(report[f"{prefix}step_width_m"], width, atol=1e-9)
        np.testing.assert_allclose(report[f"{prefix}walking_speed_per_cycle_mps"], speed, atol=1e-9)
    assert report["walking_speed_error_pct"] == 0.0
    assert abs(np.mean(speed) / SPEED - 1) < 0.03
    assert 0.5 < np.mean(length) < 0.8  # a step of about 0.4 × the standing height (1.75 m ± 10 %)


def test_a_rollout_three_frames_late_strikes_100_ms_late(task):
    report = evaluate.gait_report(task, _perfect_rollout(task, 0, lag=3), 0)
    errors = report["strike_timing_errors_r_s"] + report["strike_timing_errors_l_s"]
    assert len(errors) >= 4
    np.testing.assert_allclose(errors, 3 / FPS, atol=1e-12)
    assert report["hip_flexion_r_rmse_deg"] > 1.0


def test_an_episode_shorter_than_the_skipped_frames_is_reported_not_scored(task):
    sim = _perfect_rollout(task, 0)
    short = {"qpos": sim["qpos"][:20], "reward": sim["reward"][:19], "residual_force": np.full(19, 0.5), "end": "fall"}
    report = evaluate.gait_report(task, short, 0)
    assert "note" in report and "hip_flexion_r_rmse_deg" not in report
    assert report["fraction_followed"] == pytest.approx(20 / len(sim["qpos"]))
    assert report["residual_force_body_weight"] == 0.5
    summary = evaluate.summary([report, evaluate.gait_report(task, sim, 0)])
    assert summary["ends"] == {"reference_end": 1, "fall": 1, "negative_reward": 0, "unstable": 0}


def test_rollout_on_mujoco_c_records_its_end_and_residual_force(task):
    env = GaitImitationGymEnv(task=task)
    lift = np.zeros(env.action_space.shape)
    lift[-5] = 0.5  # half the upward pelvis force (pelvis_ty motor)
    sim = evaluate.rollout(env, lambda obs: lift, 0)
    assert sim["end"] in evaluate.ENDS
    assert len(sim["qpos"]) == len(sim["reward"]) + 1 == len(sim["residual_force"]) + 1
    weight = task.person_model(0).body_mass.sum() * 9.81  # the walker's own body
    np.testing.assert_allclose(sim["residual_force"], 0.5 * task.config.residual_force / weight, rtol=1e-3)
