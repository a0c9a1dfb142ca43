"""Gait-imitation environments: gymnasium's checker, brax jit/vmap, rewards against a hand
computation from the formulas, and clear errors for bad configurations."""

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

pytest.importorskip("brax", reason="brax is not installed")
gymnasium = pytest.importorskip("gymnasium", reason="gymnasium is not installed")

from env_registry import reference as reference_lib  # noqa: E402
from env_registry.config import GaitImitationConfig  # noqa: E402
from env_registry.gym_env import GaitImitationGymEnv  # noqa: E402
from env_registry.mjx_env import GaitImitationEnv  # noqa: E402
from env_registry.task import make_task  # noqa: E402
from mjx_biomech.io import InputError  # noqa: E402

NUM_ENVS = 64
HALPE_23 = ("LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist", "LHip", "RHip",
            "LKnee", "RKnee", "LAnkle", "RAnkle", "Head", "Neck", "Hip", "LBigToe", "RBigToe", "LSmallToe",
            "RSmallToe", "LHeel", "RHeel")  # fmt: skip
SAGITTAL = ("hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l")


@pytest.fixture(scope="module")
def task():
    return make_task(GaitImitationConfig(future_frames=2), reference="synthetic:2")


@pytest.fixture(scope="module")
def brax_env(task):
    """The environment, and one batch of NUM_ENVS reset states and their next states, from the
    only two functions this module compiles (jit of vmapped reset and step)."""
    env = GaitImitationEnv(task=task)
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
    actions = jnp.asarray(np.random.default_rng(0).uniform(-0.3, 0.3, (NUM_ENVS, env.action_size)))
    return env, state, actions, step(state, actions)


def _reference_keypoints(task, n, frame):
    """The 23 HALPE keypoints (m) of reference frame ``frame`` of trajectory ``n``, computed from
    the reference coordinates by name with MuJoCo's C kinematics."""
    m = task.body.mj_model
    d = mujoco.MjData(m)
    for name, value in zip(task.body.model.coordinate_names, task.reference.coords[n, frame]):
        d.qpos[m.jnt_qposadr[m.joint(name).id]] = value
    mujoco.mj_kinematics(m, d)
    return np.array([d.site_xpos[m.site(f"halpe26/{k}").id] for k in HALPE_23])


def _hand_reward(task, form, qpos, keypoints, keypoints_before, n, frame, action):
    """The reward from the formulas in env_registry.tracking, written out element by element."""
    m, c, h = task.body.mj_model, task.config, task.body.height
    fps = task.config.fps
    ref_kp = _reference_keypoints(task, n, frame)
    ref_kp_prev = _reference_keypoints(task, n, frame - 1)
    e_a = sum((qpos[m.jnt_qposadr[m.joint(j).id]] - task.reference.coords[n, frame, task.body.model.coordinate_names.index(j)]) ** 2 for j in SAGITTAL)
    pelvis = HALPE_23.index("Hip")
    e_x = e_v = 0.0
    for k in range(len(HALPE_23)):
        for ax in range(3):
            e_x += ((keypoints[k, ax] - keypoints[pelvis, ax]) - (ref_kp[k, ax] - ref_kp[pelvis, ax])) ** 2 / h**2
            v = (keypoints[k, ax] - keypoints_before[k, ax]) * fps
            v_ref = (ref_kp[k, ax] - ref_kp_prev[k, ax]) * fps
            e_v += (v - v_ref) ** 2 / h**2
    if form == "exp":
        return np.exp(-5.0 * e_a) + np.exp(-2.5 * e_x) + np.exp(-0.17 * e_v)
    return 8.0 - 2.5 * e_a / 6 - 3.9 * e_x / 69 - 20.0 * e_v / 69 - 0.005 * np.sum(np.asarray(action) ** 2)


def _site_positions(m, site_xpos):
    return np.array([site_xpos[m.site(f"halpe26/{k}").id] for k in HALPE_23])


def test_gymnasium_checker_passes(task):
    from gymnasium.utils.env_checker import check_env

    check_env(GaitImitationGymEnv(task=task), skip_render_check=True)


@pytest.mark.parametrize("form", ["exp", "mse"])
def test_gym_reward_matches_hand_computation(task, form):
    form_task = dataclasses.replace(task, config=dataclasses.replace(task.config, reward=form, reset_noise=0.0))
    env = GaitImitationGymEnv(task=form_task)
    env.reset(seed=3)
    n, frame = env._traj, env._frame
    m = task.body.mj_model
    before = _site_positions(m, env.data.site_xpos)
    action = np.linspace(-0.3, 0.3, env.action_space.shape[0])
    _, reward, terminated, _, info = env.step(action)
    assert info["frame"] == frame + 1
    expected = _hand_reward(form_task, form, env.data.qpos, _site_positions(m, env.data.site_xpos), before, n, frame + 1, action)
    np.testing.assert_allclose(reward, expected, rtol=1e-9)
    assert terminated == (expected < 0 or env.data.xpos[m.body("pelvis").id, 2] < 0.6 * task.targets.pelvis_height[n, frame + 1])


def test_brax_reset_and_step_jit_and_vmap_over_64_envs(task, brax_env):
    env, state, _, nxt = brax_env
    assert env.backend == "mjx"
    assert state.obs.shape == nxt.obs.shape == (NUM_ENVS, env.observation_size)
    assert nxt.reward.shape == nxt.done.shape == (NUM_ENVS,)
    frames = np.asarray(state.pipeline_state.userdata[:, 1])
    lengths = task.targets.lengths[np.asarray(state.pipeline_state.userdata[:, 0]).astype(int)]
    assert np.all(frames <= lengths - task.config.future_frames - 2)
    assert len(np.unique(frames)) > 10  # random start frames
    assert np.all(np.isfinite(np.asarray(nxt.obs))) and np.all(np.isfinite(np.asarray(nxt.reward)))
    np.testing.assert_array_equal(np.asarray(nxt.pipeline_state.userdata[:, 1]), frames + 1)


def _env_slice(tree, i):
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_brax_rewards_match_hand_computation(task, brax_env, i):
    from env_registry import tracking

    _, state, actions, nxt = brax_env
    before, after = _env_slice(state.pipeline_state, i), _env_slice(nxt.pipeline_state, i)
    n, frame = int(before.userdata[0]), int(before.userdata[1])
    m = task.body.mj_model
    kp_before, kp_after = _site_positions(m, before.site_xpos), _site_positions(m, after.site_xpos)
    action = np.asarray(actions[i])
    expected = _hand_reward(task, "exp", after.qpos, kp_after, kp_before, n, frame + 1, action)
    np.testing.assert_allclose(float(nxt.reward[i]), expected, rtol=1e-7)
    # The MSE form of the same transition, through the errors the environment reports.
    mse_task = dataclasses.replace(task, config=dataclasses.replace(task.config, reward="mse"))
    metrics = _env_slice(nxt.metrics, i)
    errors = tracking.Errors(metrics["angle_error"], metrics["position_error"], metrics["velocity_error"])
    expected = _hand_reward(mse_task, "mse", after.qpos, kp_after, kp_before, n, frame + 1, action)
    np.testing.assert_allclose(float(mse_task.reward(errors, action)), expected, rtol=1e-7)


def test_observation_holds_future_reference_keypoints(task, brax_env):
    _, state, _, _ = brax_env
    obs = np.asarray(state.obs[0])
    n, frame = (int(v) for v in np.asarray(state.pipeline_state.userdata[0]))
    f, h = task.config.future_frames, task.body.height
    pelvis_now = _reference_keypoints(task, n, frame)[HALPE_23.index("Hip")]
    future = np.stack([(_reference_keypoints(task, n, frame + 1 + k) - pelvis_now) / h for k in range(f)]).ravel()
    np.testing.assert_allclose(obs[-future.size :], future, atol=1e-3)  # observation noise σ = 1e-4


def test_negative_future_frames_is_a_clear_error():
    with pytest.raises(InputError, match="future_frames"):
        GaitImitationConfig(future_frames=-1)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match="no_such_body"):
        make_task(GaitImitationConfig(model="no_such_body"))


def test_reference_shorter_than_future_frames_is_a_clear_error(task):
    short = reference_lib.stack([task.reference.coords[0, :3]], task.config.fps, ["three_frames"])
    with pytest.raises(InputError, match="three_frames.*too short"):
        make_task(GaitImitationConfig(future_frames=4), reference=short)


def test_unknown_reference_source_is_a_clear_error():
    with pytest.raises(InputError, match="not_a_file.mot"):
        make_task(reference="not_a_file.mot")


def test_reference_from_mot_file_and_fit_folder(task, tmp_path):
    from converters import mot

    names = task.body.model.coordinate_names
    coords = task.reference.coords[0, : task.reference.lengths[0]]
    times = np.arange(len(coords)) / task.config.fps
    rotational = [n for n, kind in zip(names, task.body.model.coordinate_motion) if kind == "rotational"]
    # An extra upper-body column, as a full-body fit writes: the lower-body model ignores it.
    values = np.concatenate([coords, np.full((len(coords), 1), 0.3)], axis=1)
    mot.write_mot(tmp_path / "trial.mot", times, list(names) + ["arm_flex_r"], values, rotational + ["arm_flex_r"])
    from_file = reference_lib.load_reference(str(tmp_path / "trial.mot"), task.body, task.config.fps)
    np.testing.assert_allclose(from_file.coords[0], coords, atol=1e-6)  # .mot stores degrees as text
    from_folder = reference_lib.load_reference(str(tmp_path), task.body, task.config.fps)
    assert from_folder.names == ("trial.mot",) and from_folder.lengths.tolist() == [len(coords)]
    # At half the frame rate every other frame remains.
    half = reference_lib.load_reference(str(tmp_path / "trial.mot"), task.body, task.config.fps / 2)
    np.testing.assert_allclose(half.coords[0], coords[::2], atol=1e-6)


def test_pd_control_follows_its_formula(task):
    pd_task = dataclasses.replace(task, config=dataclasses.replace(task.config, control="pd"))
    body, j = task.body, task.num_joints
    rng = np.random.default_rng(1)
    action = rng.uniform(-1, 1, pd_task.action_size)
    q, qdot = rng.uniform(-0.5, 0.5, j), rng.uniform(-2, 2, j)
    ctrl = pd_task.controls(action, q, qdot)
    for i in range(j):
        lo, hi = body.joint_range[i]
        setpoint = (lo + hi) / 2 + action[i] * (hi - lo) / 2
        kp = 300.0 * (action[j + i] + 1) / 2  # kp_max = 300 N·m/rad
        torque = kp * (setpoint - q[i]) - kp * 0.05 * qdot[i]  # damping time 0.05 s
        assert ctrl[i] == pytest.approx(np.clip(torque / body.gear[i], -1, 1), rel=1e-12)
    np.testing.assert_array_equal(ctrl[j:], action[2 * j :])  # the pelvis wrench passes through
