"""Every reference walks with its own body: the MJX environment scales the simulated body per
episode by the core's dynamic MJX scaling, in one compiled step, and matches MuJoCo C stepping each
person's statically scaled model (``model.to_mujoco(params)``); observations and rewards use each
person's own height; the gymnasium environment runs each person's ``to_mujoco`` model, compiled
once per person; synthetic walkers stand on their own feet; a fit folder's person is carried
over by name. float64 (tests/conftest.py)."""

import json

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

pytest.importorskip("brax", reason="brax is not installed")
pytest.importorskip("gymnasium", reason="gymnasium is not installed")

import mjx_biomech  # noqa: E402
from env_registry import people  # noqa: E402
from env_registry import reference as reference_lib  # noqa: E402
from env_registry.body import build_body  # noqa: E402
from env_registry.config import GaitImitationConfig  # noqa: E402
from env_registry.gym_env import GaitImitationGymEnv  # noqa: E402
from env_registry.mjx_env import GaitImitationEnv  # noqa: E402
from env_registry.task import make_task  # noqa: E402
from mjx_biomech.capture import synthetic  # noqa: E402

SCALES = (0.9, 1.1)  # the two walkers' overall scale
STEPS = 10
# Enough constraint-solver iterations to converge: MJX's Newton solver and line search take other
# paths than MuJoCo C's when stopped early (the environments' default is 1 iteration).
CONFIG = GaitImitationConfig(future_frames=1, reset_noise=0.0, observation_noise=0.0, solver_iterations=50)


@pytest.fixture(scope="module")
def task():
    """Two walkers, scaled 0.9 and 1.1, each walking on their own feet for 0.5 s."""
    body = build_body(CONFIG.model, CONFIG.fps, CONFIG.substeps, solver_iterations=CONFIG.solver_iterations)
    persons = [body.model.scale_params(overall=s) for s in SCALES]
    walks = [synthetic.walking(body.model, duration=0.5, fps=CONFIG.fps, seed=0, params=p)[1] for p in persons]
    params = people.stack(persons)
    ref = reference_lib.stack(walks, CONFIG.fps, people.heights(body, params), ["small", "tall"], params)
    return make_task(CONFIG, reference=ref)


@pytest.fixture(scope="module")
def rollout(task):
    """Both walkers in one vmapped batch: the reset states and STEPS steps of fixed actions,
    from one jitted reset and one jitted step."""
    env = GaitImitationEnv(task=task)
    reset = jax.jit(jax.vmap(lambda n: env.reset_to(jax.random.PRNGKey(0), n, 0, 0.0)))
    step = jax.jit(jax.vmap(env.step))
    actions = jnp.asarray(0.2 * np.sin(np.arange(2 * env.action_size).reshape(2, -1)))
    states = [reset(jnp.arange(2))]
    for _ in range(STEPS):
        states.append(step(states[-1], actions))
    return env, step, np.asarray(actions), states


def _person(task, n):
    return people.person(task.reference.params, n)


def _c_step(task, m, d, action):
    """One control step on MuJoCo C: the task's controls, then ``substeps`` calls of mj_step."""
    body = task.body
    for _ in range(task.config.substeps):
        u = task.controls(action, d.qpos, d.qvel)
        d.ctrl[body.joint_actuators], d.ctrl[body.pelvis_actuators] = u[: task.num_joints], u[task.num_joints :]
        mujoco.mj_step(m, d)


@pytest.mark.parametrize("n", [0, 1])
def test_batched_walkers_step_like_mujoco_c_on_their_own_scaled_models(task, rollout, n):
    _, _, actions, states = rollout
    m = task.body.model.to_mujoco(_person(task, n))
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = np.asarray(states[0].pipeline_state.qpos[n]), np.asarray(states[0].pipeline_state.qvel[n])
    contacts = 0
    for k in range(1, STEPS + 1):
        _c_step(task, m, d, actions[n])
        contacts = max(contacts, d.ncon)
        ours = states[k].pipeline_state
        np.testing.assert_allclose(np.asarray(ours.qpos[n]), d.qpos, atol=1e-6, err_msg=f"qpos after step {k}")
        np.testing.assert_allclose(np.asarray(ours.qvel[n]), d.qvel, atol=1e-6, err_msg=f"qvel after step {k}")
    assert contacts > 0, "the walker's feet should touch the floor"
    # The bodies differ: each segment weighs scale³ times the simulated body's.
    np.testing.assert_allclose(m.body_mass[1:], task.body.mj_model.body_mass[1:] * SCALES[n] ** 3, rtol=1e-9)


def test_one_compiled_step_for_every_person(rollout):
    _, step, actions, states = rollout
    assert step._cache_size() == 1
    swapped = jax.tree.map(lambda x: x[::-1], states[0])  # each slot now holds the other person
    nxt = step(swapped, jnp.asarray(actions))
    assert step._cache_size() == 1
    # The slots' people changed with the swap: the walkers' states are not those of the batch before.
    assert not np.allclose(np.asarray(nxt.pipeline_state.qpos), np.asarray(states[1].pipeline_state.qpos))


def test_heights_are_those_of_each_persons_scaled_body(task):
    heights = [task.body.model.standing_height(_person(task, n)) for n in range(2)]
    np.testing.assert_allclose(task.reference.heights, heights, rtol=1e-12)
    np.testing.assert_allclose(heights, np.array(SCALES) * task.body.height, rtol=1e-9)


def test_observation_and_reward_use_each_persons_height(task, rollout):
    _, _, _, states = rollout
    after = states[1]
    for n in range(2):
        h = task.reference.heights[n]
        m = task.body.model.to_mujoco(_person(task, n))
        pelvis_z = float(after.pipeline_state.xpos[n, task.body.pelvis_body, 2])
        assert float(after.obs[n, 0]) == pytest.approx(pelvis_z / h, rel=1e-12)
        # The position error from the person's own reference keypoints (MuJoCo C kinematics on
        # their scaled model), divided by their height squared.
        d = mujoco.MjData(m)
        frame = int(after.pipeline_state.userdata[n, 1])
        d.qpos[:] = np.asarray(task.body.model.coords_to_qpos(task.reference.coords[n, frame], _person(task, n)))
        mujoco.mj_kinematics(m, d)
        sites, p = task.targets.keypoint_sites, task.targets.pelvis_keypoint
        ref = d.site_xpos[sites] - d.site_xpos[sites][p]
        kp = np.asarray(after.pipeline_state.site_xpos[n])[sites]
        expected = np.sum(((kp - kp[p]) - ref) ** 2) / h**2
        assert float(after.metrics["position_error"][n]) == pytest.approx(expected, rel=1e-9)


def test_gym_env_runs_each_persons_to_mujoco_model_compiled_once(task):
    env = GaitImitationGymEnv(task=task)
    models = []
    for n in (0, 1, 0):
        obs, _ = env.reset_to(n, 0, 0.0)
        models.append(env.model)
        assert obs[0] == pytest.approx(env.data.xpos[task.body.pelvis_body, 2] / task.reference.heights[n], rel=1e-12)
    assert models[0] is models[2] and models[0] is not models[1]
    for n in range(2):
        m = task.body.model.to_mujoco(_person(task, n))
        for field in ("body_mass", "body_inertia", "body_pos", "geom_size", "site_pos", "dof_invweight0"):
            np.testing.assert_allclose(getattr(models[n], field), getattr(m, field), rtol=1e-12, atol=1e-15, err_msg=field)
        env.reset_to(n, 0, 0.0)
        d = mujoco.MjData(m)
        d.qpos[:], d.qvel[:] = env.data.qpos, env.data.qvel
        action = np.full(env.action_space.shape, 0.1)
        env.step(action)
        _c_step(task, m, d, action)
        np.testing.assert_allclose(env.data.qpos, d.qpos, atol=1e-12)


def test_synthetic_walkers_carry_their_own_bodies():
    body = build_body("lower_body")
    ref = reference_lib.synthetic(body, 30.0, num=2, duration=0.3)
    scales = np.asarray(ref.params.scales)
    assert scales.shape == (2, len(body.model.scale_param_names)) and not np.allclose(scales[0], scales[1])
    names = body.model.scale_param_names
    for side in ("thigh", "leg"):  # left and right tied
        np.testing.assert_array_equal(scales[:, names.index(f"{side}_r")], scales[:, names.index(f"{side}_l")])
    np.testing.assert_allclose(ref.heights, [body.model.standing_height(people.person(ref.params, n)) for n in range(2)])


def test_fit_folder_person_has_the_fits_scales_and_marker_sites(tmp_path):
    body = build_body("lower_body")
    full = mjx_biomech.load_model()
    values = {"overall": 1.05, "pelvis": 0.97, "thigh_r": 1.08, "thigh_l": 1.02, "leg_r": 0.95, "leg_l": 1.0, "torso": 1.1}
    offsets = np.zeros((len(full.site_names), 3))
    offsets[full.site_names.index("bml_movi_87/rkne")] = (0.01, -0.02, 0.005)
    offsets[full.site_names.index("bml_movi_87/sternum")] = (0.0, 0.015, 0.01)  # on the torso, fused into the pelvis
    fitted = full.scale_params(**values).replace(offsets=jnp.asarray(offsets))
    full.to_mjcf(fitted, tmp_path / "model_scaled.xml")
    (tmp_path / "report.json").write_text(json.dumps({"scale_params": values}))
    coords = np.tile(body.model.neutral_coordinates(), (4, 1))
    from converters import mot

    rotational = [k == "rotational" for k in body.model.coordinate_motion]
    mot.write_mot(tmp_path / "trial.mot", np.arange(4) / 30.0, body.model.coordinate_names, coords, rotational)
    ref = reference_lib.load_reference(str(tmp_path), body, 30.0)
    person = people.person(ref.params, 0)
    np.testing.assert_allclose(person.scales, [values[n] for n in body.model.scale_param_names])
    # At the reference pose every site of the person's simulated body sits where the fit's own
    # scaled model has it (the torso markers too, though the torso scales with the pelvis here).
    ours, theirs = body.model.to_mujoco(person), mujoco.MjModel.from_xml_path(str(tmp_path / "model_scaled.xml"))
    d_ours, d_theirs = mujoco.MjData(ours), mujoco.MjData(theirs)
    mujoco.mj_kinematics(ours, d_ours)
    mujoco.mj_kinematics(theirs, d_theirs)
    by_name = [theirs.site(ours.site(i).name).id for i in range(ours.nsite)]
    # The MJCF text keeps 6 significant digits (up to 5e-7 m here).
    np.testing.assert_allclose(d_ours.site_xpos, d_theirs.site_xpos[by_name], atol=1e-6)
    assert ref.heights[0] == pytest.approx(body.model.standing_height(person), rel=1e-12)


def test_scales_map_onto_the_simulated_body_by_name():
    body = build_body("lower_body")
    values = {"overall": 1.02, "thigh": 1.1, "leg_r.x": 0.9, "leg_r.y": 1.0, "leg_r.z": 1.1, "torso": 1.3}
    scales = dict(zip(body.model.scale_param_names, people.params_from_scales(body, values, "report.json").scales))
    assert scales == pytest.approx({"overall": 1.02, "pelvis": 1.0, "thigh_r": 1.1, "thigh_l": 1.1,
                                    "leg_r": (0.9 * 1.0 * 1.1) ** (1 / 3), "leg_l": 1.0}, rel=1e-12)  # fmt: skip
    with pytest.raises(mjx_biomech.InputError, match="report.json: scale 'pelvis'"):
        people.params_from_scales(body, {"pelvis": -1.0}, "report.json")


@pytest.mark.parametrize("n", [0, 1])
def test_each_walker_stands_on_its_own_feet(task, n):
    """``synthetic.walking(..., params=)`` solves the ground contact on the person's scaled body:
    MuJoCo C kinematics of that body puts each stance foot's lowest point within 5 mm of the floor
    (on the unscaled body the same motion would be centimetres off)."""
    model, params = task.body.model, _person(task, n)
    coords = task.reference.coords[n, : task.reference.lengths[n]]
    feet = [[g for g in task.body.foot_geoms if task.body.mj_model.geom(g).name.endswith(s)] for s in ("_r", "_l")]

    def lowest(m, p):
        d = mujoco.MjData(m)
        out = []
        for q in coords:
            d.qpos[:] = np.asarray(model.coords_to_qpos(q, p))
            mujoco.mj_kinematics(m, d)
            out.append([np.min(d.geom_xpos[f, 2] - m.geom_size[f, 0]) for f in feet])
        return np.array(out)

    times = np.arange(len(coords)) / CONFIG.fps
    phase = np.mod(times[:, None] * synthetic.default_cadence(model, 1.3, params) / 120 + [0.0, 0.5], 1.0)
    stance = phase < synthetic.STANCE_FRACTION
    assert np.max(np.abs(lowest(model.to_mujoco(params), params)[stance])) < 0.005
    assert np.max(np.abs(lowest(task.body.mj_model, model.default_params())[stance])) > 0.02
