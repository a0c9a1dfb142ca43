"""The MJX environment as a MuJoCo Playground ``MjxEnv``, which is what MyoSuite's
``make_env(id, backend="mjx")`` builds (through ``mujoco_playground.registry.load``)."""

from __future__ import annotations

import dataclasses

import jax
from brax.envs.base import State as BraxState
from ml_collections import config_dict
from mujoco_playground import MjxEnv, State

from .config import GaitImitationConfig
from .mjx_env import GaitImitationEnv


def default_config() -> config_dict.ConfigDict:
    """Playground configuration: the :class:`GaitImitationConfig` fields, the reference source,
    and Playground's own ``ctrl_dt``/``sim_dt``/``episode_length`` (derived, informational)."""
    cfg = GaitImitationConfig()
    return config_dict.create(
        reference="synthetic",
        ctrl_dt=1.0 / cfg.fps,
        sim_dt=1.0 / (cfg.fps * cfg.substeps),
        episode_length=1000,
        action_repeat=1,
        **dataclasses.asdict(cfg),
    )


class PlaygroundGaitImitation(MjxEnv):
    """Playground view of :class:`.mjx_env.GaitImitationEnv` (same physics, observations, rewards)."""

    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides: dict | None = None):
        super().__init__(config or default_config(), config_overrides)
        fields = {f.name for f in dataclasses.fields(GaitImitationConfig)}
        values = {k: v for k, v in self._config.to_dict().items() if k in fields}
        self._env = GaitImitationEnv(GaitImitationConfig(**values), reference=self._config.reference)
        self._ctrl_dt = self._env.task.dt
        self._sim_dt = self._env.task.dt / self._env.task.config.substeps

    def reset(self, rng: jax.Array) -> State:
        return self._to_playground(self._env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        brax_state = BraxState(state.data, state.obs, state.reward, state.done, state.metrics, state.info)
        return self._to_playground(self._env.step(brax_state, action))

    @staticmethod
    def _to_playground(s: BraxState) -> State:
        return State(s.pipeline_state, s.obs, s.reward, s.done, s.metrics, s.info)

    @property
    def xml_path(self) -> str:
        return self._env.task.body.model.source

    @property
    def action_size(self) -> int:
        return self._env.action_size

    @property
    def observation_size(self) -> int:
        return self._env.observation_size

    @property
    def mj_model(self):
        return self._env.task.body.mj_model

    @property
    def mjx_model(self):
        return self._env.sys
