"""Gait-imitation environments and their registration in brax, gymnasium and MyoSuite.

Importing this package registers, for each framework that is installed (and skips those that
are not):

- brax: ``brax.envs.get_environment("mjx_biomech_gait_imitation", **kwargs)`` → the MJX
  environment (:class:`env_registry.mjx_env.GaitImitationEnv`);
- gymnasium: ``gymnasium.make("mjx_biomech/GaitImitation-v0", **kwargs)`` → the MuJoCo-C
  environment (:class:`env_registry.gym_env.GaitImitationGymEnv`);
- MyoSuite: ``myosuite.core.registry.make_env("mjxBiomechGaitImitation-v0")`` → the MuJoCo-C
  environment, and ``make_env(..., backend="mjx")`` → the MJX environment as a MuJoCo
  Playground ``MjxEnv`` (registered with ``mujoco_playground.dm_control_suite``).

LocoMujoco is not supported: its latest release (1.0.0) pins MuJoCo 3.2.7 and numpy < 2, and this
project needs MuJoCo ≥ 3.3 and numpy 2.

``kwargs`` are the fields of :class:`GaitImitationConfig` plus ``reference`` (see
:func:`env_registry.reference.load_reference`). Environment modules are imported only when an
environment is built.
"""

from __future__ import annotations

import importlib.util

from .config import GaitImitationConfig

BRAX_NAME = "mjx_biomech_gait_imitation"
GYM_ID = "mjx_biomech/GaitImitation-v0"
MYOSUITE_ID = "mjxBiomechGaitImitation-v0"
GYM_ENTRY_POINT = "env_registry.gym_env:GaitImitationGymEnv"
# Long enough for any reference; episodes end themselves when the reference runs out.
MAX_EPISODE_STEPS = 100_000

__all__ = ["BRAX_NAME", "GYM_ID", "MYOSUITE_ID", "GaitImitationConfig", "make_brax_env", "make_gym_env", "registered"]

registered: dict[str, bool] = {}


def make_brax_env(**kwargs):
    """The MJX environment (brax ``Env``)."""
    from .mjx_env import GaitImitationEnv

    return GaitImitationEnv(**kwargs)


def make_gym_env(**kwargs):
    """The MuJoCo-C environment (gymnasium ``Env``)."""
    from .gym_env import GaitImitationGymEnv

    return GaitImitationGymEnv(**kwargs)


def _make_playground_env(config=None, config_overrides=None):
    from .playground import PlaygroundGaitImitation

    return PlaygroundGaitImitation(config, config_overrides)


def _playground_config():
    from .playground import default_config

    return default_config()


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _register_brax() -> bool:
    if not _installed("brax"):
        return False
    from brax import envs

    envs.register_environment(BRAX_NAME, make_brax_env)
    return True


def _register_gymnasium() -> bool:
    if not _installed("gymnasium"):
        return False
    import gymnasium

    if GYM_ID not in gymnasium.registry:
        gymnasium.register(GYM_ID, entry_point=GYM_ENTRY_POINT, max_episode_steps=MAX_EPISODE_STEPS)
    return True


def _register_myosuite() -> bool:
    if not _installed("myosuite"):
        return False
    from myosuite.core.registry import register_env

    register_env(MYOSUITE_ID, GYM_ENTRY_POINT, max_episode_steps=MAX_EPISODE_STEPS)
    return True


def _register_playground() -> bool:
    # MyoSuite's make_env(backend="mjx") loads from MuJoCo Playground's registry.
    if not (_installed("mujoco_playground") and _installed("brax")):
        return False
    from mujoco_playground import dm_control_suite

    dm_control_suite.register_environment(MYOSUITE_ID, _make_playground_env, _playground_config)
    return True


def _register_all() -> None:
    for name, register in (
        ("brax", _register_brax),
        ("gymnasium", _register_gymnasium),
        ("myosuite", _register_myosuite),
        ("mujoco_playground", _register_playground),
    ):
        try:
            registered[name] = register()
        except ImportError:
            # Installed but broken (e.g. a version clash): the other frameworks still register.
            registered[name] = False


_register_all()
