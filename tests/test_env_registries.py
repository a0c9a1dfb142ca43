"""Registration of the gait-imitation environments in brax, gymnasium and MyoSuite (CPU and MJX):
each framework's own make/get function builds our environment."""

import jax
import numpy as np
import pytest

pytest.importorskip("brax", reason="brax is not installed")
pytest.importorskip("gymnasium", reason="gymnasium is not installed")

import env_registry  # noqa: E402
from env_registry.config import GaitImitationConfig  # noqa: E402
from env_registry.task import make_task  # noqa: E402

REFERENCE = "synthetic:1"


@pytest.fixture(scope="module")
def task():
    return make_task(GaitImitationConfig(future_frames=4), reference=REFERENCE)


def test_brax_get_environment_builds_the_mjx_environment(task):
    from brax import envs

    from env_registry.mjx_env import GaitImitationEnv

    env = envs.get_environment(env_registry.BRAX_NAME, task=task)
    assert isinstance(env, GaitImitationEnv)
    assert env.backend == "mjx"
    assert env.observation_size == task.observation_size
    # 10 joint motors + 6 pelvis residual motors on the lower-body model
    assert env.action_size == 16
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert state.obs.shape == (env.observation_size,)


def test_gymnasium_make_builds_the_mujoco_c_environment(task):
    import gymnasium

    from env_registry.gym_env import GaitImitationGymEnv

    env = gymnasium.make(env_registry.GYM_ID, task=task)
    assert isinstance(env.unwrapped, GaitImitationGymEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (task.observation_size,)
    obs, reward, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape))
    assert np.isfinite(reward) and obs.shape == (task.observation_size,)


def test_gymnasium_make_passes_configuration_fields():
    import gymnasium

    env = gymnasium.make(env_registry.GYM_ID, reference=REFERENCE, control="pd", future_frames=1)
    # PD control: a setpoint and a gain per joint, plus the pelvis wrench
    assert env.action_space.shape == (2 * 10 + 6,)
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.zeros(env.action_space.shape))
    assert obs.shape == env.observation_space.shape and np.isfinite(reward)
    # the joint motors received PD torques (mid-range setpoints, half the largest stiffness)
    assert np.any(np.abs(env.unwrapped.data.ctrl[env.unwrapped.task.body.joint_actuators]) > 0.01)


def test_myosuite_make_env_builds_the_cpu_environment(task):
    registry = pytest.importorskip("myosuite.core.registry", reason="MyoSuite is not installed")
    from env_registry.gym_env import GaitImitationGymEnv

    env = registry.make_env(env_registry.MYOSUITE_ID, task=task)
    assert isinstance(env.unwrapped, GaitImitationGymEnv)
    obs, _ = env.reset(seed=1)
    _, reward, *_ = env.step(np.zeros(env.action_space.shape))
    assert obs.shape == (task.observation_size,) and np.isfinite(reward)


def test_myosuite_make_env_mjx_builds_the_playground_environment():
    registry = pytest.importorskip("myosuite.core.registry", reason="MyoSuite is not installed")
    pytest.importorskip("mujoco_playground", reason="MuJoCo Playground is not installed (MyoSuite's mjx backend needs it)")
    from mujoco_playground import MjxEnv

    env = registry.make_env(env_registry.MYOSUITE_ID, backend="mjx", reference=REFERENCE, future_frames=1)
    assert isinstance(env, MjxEnv)
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert state.obs.shape == (env.observation_size,)
    nxt = jax.eval_shape(env.step, state, jax.ShapeDtypeStruct((env.action_size,), state.obs.dtype))
    assert nxt.reward.shape == ()
    assert env.dt == pytest.approx(1 / 30) and env.n_substeps == 16
