"""Gait-imitation environments: gymnasium's checker, brax jit/vmap, rewards against a hand
computation from the formulas (the paper's 23 MoVi keypoints, scaled by each reference person's
own height), fresh starts under brax's auto-reset, and clear errors for bad configurations."""

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

NUM_ENVS = 16
EPISODE_LENGTH = 1000
# The paper's keypoints: heels, big toes, feet, ankles, knees, hips, elbows, shoulders, wrists,
# hands, head, pelvis and sternum, as BML-MoVi markers.
MOVI_23 = ("rhee", "lhee", "rtoe", "ltoe", "rfoo", "lfoo", "rank", "lank", "rkne", "lkne", "rhip", "lhip",
           "relb", "lelb", "rsho", "lsho", "rwri", "lwri", "rhan", "lhan", "head", "pelv", "sternum")  # fmt: skip
# Standing heights of the two reference people, m (the simulated body is 1.75 m tall).
HEIGHTS = (1.6, 1.9)
SAGITTAL = ("hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l")


@pytest.fixture(scope="module")
def task():
    # One body for every trajectory (each person's own body: tests/test_env_person.py).
    config = GaitImitationConfig(future_frames=2, per_person_body=False)
    body_task = make_task(config, reference="synthetic:2")
    people = dataclasses.replace(body_task.reference, heights=np.array(HEIGHTS))
    return make_task(config, reference=people)


@pytest.fixture(scope="module")
def brax_env(task):
    """The environment in brax's training wrappers (time limit, vmap, auto-reset), and one batch
    of NUM_ENVS reset states and their next states, from the only two functions this module
    compiles: the jitted wrapped reset and step."""
    from brax.envs.wrappers import training

    env = training.wrap(GaitImitationEnv(task=task), episode_length=EPISODE_LENGTH)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
    actions = jnp.asarray(np.random.default_rng(0).uniform(-0.3, 0.3, (NUM_ENVS, env.action_size)))
    return env, step, state, actions, step(state, actions)


def _reference_keypoints(task, n, frame):
    """The 23 MoVi keypoints (m) of reference frame ``frame`` of trajectory ``n``, computed from
    the reference coordinates by name with MuJoCo's C kinematics."""
    m = task.body.mj_model
    d = mujoco.MjData(m)
    for name, value in zip(task.body.model.coordinate_names, task.reference.coords[n, frame]):
        d.qpos[m.jnt_qposadr[m.joint(name).id]] = value
    mujoco.mj_kinematics(m, d)
    return np.array([d.site_xpos[m.site(f"bml_movi_87/{k}").id] for k in MOVI_23])


def _hand_reward(task, form, qpos, keypoints, keypoints_before, n, frame, action):
    """The reward from the formulas in env_registry.tracking, written out element by element, with
    the reference person's height."""
    m, h = task.body.mj_model, HEIGHTS[n]
    fps = task.config.fps
    ref_kp = _reference_keypoints(task, n, frame)
    ref_kp_prev = _reference_keypoints(task, n, frame - 1)
    e_a = sum((qpos[m.jnt_qposadr[m.joint(j).id]] - task.reference.coords[n, frame, task.body.model.coordinate_names.index(j)]) ** 2 for j in SAGITTAL)
    pelvis = MOVI_23.index("pelv")
    e_x = e_v = 0.0
    for k in range(len(MOVI_23)):
        for ax in range(3):
            e_x += ((keypoints[k, ax] - keypoints[pelvis, ax]) - (ref_kp[k, ax] - ref_kp[pelvis, ax])) ** 2 / h**2
            v = (keypoints[k, ax] - keypoints_before[k, ax]) * fps
            v_ref = (ref_kp[k, ax] - ref_kp_prev[k, ax]) * fps
            e_v += (v - v_ref) ** 2 / h**2
    if form == "exp":
        return 1.0 * np.exp(-5.0 * e_a) * np.exp(-2.5 * e_x) * np.exp(-0.17 * e_v)
    return 8.0 - 2.5 * e_a / 6 - 3.9 * e_x / 69 - 20.0 * e_v / 69 - 0.005 * np.sum(np.asarray(action) ** 2)


def _site_positions(m, site_xpos):
    return np.array([site_xpos[m.site(f"bml_movi_87/{k}").id] for k in MOVI_23])


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


def test_brax_reset_and_step_jit_and_vmap_over_16_envs(task, brax_env):
    env, _, state, _, nxt = brax_env
    assert env.backend == "mjx"
    assert state.obs.shape == nxt.obs.shape == (NUM_ENVS, env.observation_size)
    assert nxt.reward.shape == nxt.done.shape == (NUM_ENVS,)
    frames = np.asarray(state.pipeline_state.userdata[:, 1])
    lengths = task.targets.lengths[np.asarray(state.pipeline_state.userdata[:, 0]).astype(int)]
    assert np.all(frames <= lengths - task.config.future_frames - 2)
    assert len(np.unique(frames)) > 10  # random start frames
    assert np.all(np.isfinite(np.asarray(nxt.obs))) and np.all(np.isfinite(np.asarray(nxt.reward)))
    going = np.asarray(nxt.done) == 0
    assert going.sum() > NUM_ENVS // 2
    np.testing.assert_array_equal(np.asarray(nxt.pipeline_state.userdata[going, 1]), frames[going] + 1)


def _env_slice(tree, i):
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


@pytest.mark.parametrize("j", [0, 1, 2])
def test_brax_rewards_match_hand_computation(task, brax_env, j):
    from env_registry import tracking

    _, _, state, actions, nxt = brax_env
    i = int(np.flatnonzero(np.asarray(nxt.done) == 0)[j])  # an episode that goes on (not auto-reset)
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
    _, _, state, _, _ = brax_env
    obs = np.asarray(state.obs[0])
    n, frame = (int(v) for v in np.asarray(state.pipeline_state.userdata[0]))
    f, h = task.config.future_frames, HEIGHTS[n]
    pelvis_now = _reference_keypoints(task, n, frame)[MOVI_23.index("pelv")]
    future = np.stack([(_reference_keypoints(task, n, frame + 1 + k) - pelvis_now) / h for k in range(f)]).ravel()
    np.testing.assert_allclose(obs[-future.size :], future, atol=1e-3)  # observation noise σ = 1e-4


def test_negative_future_frames_is_a_clear_error():
    with pytest.raises(InputError, match="future_frames"):
        GaitImitationConfig(future_frames=-1)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match="no_such_body"):
        make_task(GaitImitationConfig(model="no_such_body"))


def test_reference_shorter_than_future_frames_is_a_clear_error(task):
    short = reference_lib.stack([task.reference.coords[0, :3]], task.config.fps, 1.75, ["three_frames"])
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
    m = body.mj_model
    qpos, qvel = rng.uniform(-0.5, 0.5, m.nq), rng.uniform(-2, 2, m.nv)
    q, qdot = qpos[body.joint_qpos], qvel[body.joint_qvel]
    ctrl = pd_task.controls(action, qpos, qvel)
    for i in range(j):
        lo, hi = body.joint_range[i]
        setpoint = (lo + hi) / 2 + action[i] * (hi - lo) / 2
        kp = 300.0 * (action[j + i] + 1) / 2  # kp_max = 300 N·m/rad
        torque = kp * (setpoint - q[i]) - kp * 0.05 * qdot[i]  # damping time 0.05 s
        assert ctrl[i] == pytest.approx(np.clip(torque / body.gear[i], -1, 1), rel=1e-12)
    np.testing.assert_array_equal(ctrl[j:], action[2 * j :])  # the pelvis wrench passes through


def test_reference_pd_control_follows_its_formula(task):
    """Setpoints around the reference's next frame, damping towards its velocity, and a critically
    damped pelvis assist towards the reference pelvis added to the policy's wrench."""
    config = dataclasses.replace(task.config, control="reference_pd", setpoint_range=0.4, assist_frequency=2.0)
    ref_task = dataclasses.replace(task, config=config)
    body, j, m = task.body, task.num_joints, task.body.mj_model
    rng = np.random.default_rng(2)
    action = rng.uniform(-1, 1, ref_task.action_size)
    qpos, qvel = rng.uniform(-0.3, 0.3, m.nq), rng.uniform(-1, 1, m.nv)
    ref_qpos, ref_qvel = qpos + rng.uniform(-0.05, 0.05, m.nq), qvel + rng.uniform(-0.3, 0.3, m.nv)
    mass, height = 70.0, 1.7
    ctrl = ref_task.controls(action, qpos, qvel, ref_qpos, ref_qvel, mass, height)
    for i in range(j):
        qa, va = body.joint_qpos[i], body.joint_qvel[i]
        kp = 300.0 * (action[j + i] + 1) / 2
        torque = kp * (ref_qpos[qa] + 0.4 * action[i] - qpos[qa]) + kp * 0.05 * (ref_qvel[va] - qvel[va])
        assert ctrl[i] == pytest.approx(np.clip(torque / body.gear[i], -1, 1), rel=1e-12)
    omega = 2 * np.pi * 2.0
    for k, name in enumerate(("pelvis_tx", "pelvis_ty", "pelvis_tz", "pelvis_tilt", "pelvis_list", "pelvis_rotation")):
        jid = m.joint(name).id
        qa, va = m.jnt_qposadr[jid], m.jnt_dofadr[jid]
        inertia = mass if k < 3 else mass * (height / 4) ** 2
        wrench = inertia * omega**2 * (ref_qpos[qa] - qpos[qa]) + 2 * inertia * omega * (ref_qvel[va] - qvel[va])
        gear = m.actuator_gear[m.actuator(f"residual_{name}").id, 0]
        assert ctrl[j + k] == pytest.approx(np.clip(wrench / gear + action[2 * j + k], -1, 1), rel=1e-12)


def test_pelvis_assist_anneals_linearly_to_its_final_strength(task):
    config = dataclasses.replace(task.config, control="reference_pd", assist_frequency=2.0, assist_final=0.2, assist_anneal_steps=100)
    annealed = dataclasses.replace(task, config=config)
    steps = np.array([0, 50, 100, 1000])
    np.testing.assert_allclose(annealed.assist_strength(steps), [1.0, 0.6, 0.2, 0.2], rtol=1e-15)
    assert dataclasses.replace(task, config=dataclasses.replace(config, assist_anneal_steps=0)).assist_strength(0) == 0.2
    # The strength scales the assist: at strength 0 the pelvis motors carry the policy's wrench alone.
    m, j = task.body.mj_model, task.num_joints
    rng = np.random.default_rng(3)
    action = rng.uniform(-1, 1, annealed.action_size)
    qpos, qvel = rng.uniform(-0.3, 0.3, m.nq), rng.uniform(-1, 1, m.nv)
    ctrl = annealed.controls(action, qpos, qvel, qpos + 0.05, qvel + 0.1, 70.0, 1.7, 0.0)
    np.testing.assert_array_equal(ctrl[j:], action[2 * j :])
    for bad in ({"assist_final": 1.5}, {"assist_final": float("nan")}, {"assist_anneal_steps": -1}, {"kp_max": float("inf")}):
        with pytest.raises(InputError, match=next(iter(bad))):
            dataclasses.replace(config, **bad)


def test_brax_auto_reset_draws_fresh_starts(task, brax_env):
    """brax's auto-reset restores an ended episode's kept first state; the environment replaces it
    by a fresh (trajectory, frame) each time. Every step here ends its episodes by the time limit
    (the step counter is set to its last value), so 63 steps of the 16 environments auto-reset
    1,008 times: at least 200 distinct starts."""
    _, step, state, actions, _ = brax_env
    steps = 63
    starts = set()
    assist_step = np.asarray(state.info["assist_step"])
    for _ in range(steps):
        # Each episode has gone on for all but its last step.
        last = jnp.full_like(state.info["steps"], EPISODE_LENGTH - 1)
        state = state.replace(done=jnp.zeros_like(state.done), info={**state.info, "steps": last})
        state = step(state, actions)
        assert np.all(np.asarray(state.done) == 1)
        starts |= {(int(n), int(frame)) for n, frame in np.asarray(state.pipeline_state.userdata)}
    assert len(starts) >= 200
    # Each environment's control-step count (the pelvis assist's curriculum clock) survives its
    # auto-resets.
    np.testing.assert_array_equal(np.asarray(state.info["assist_step"]), assist_step + steps)
    lengths = task.targets.lengths
    assert all(0 <= frame <= lengths[n] - task.config.future_frames - 2 for n, frame in starts)
