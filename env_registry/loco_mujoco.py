"""LocoMujoco adapter: the simulated body of :mod:`.body` as a ``LocoEnv``, registered with
``MjxBiomechGaitImitation.register()`` (done by ``import env_registry`` when LocoMujoco imports),
so that ``LocoEnv.make("MjxBiomechGaitImitation", reference=...)`` builds it.

Written against LocoMujoco's current API (``loco_mujoco.environments.base.LocoEnv`` on
``loco_mujoco.core.Mujoco``: ``spec``, ``actuation_spec``, ``observation_spec``,
``_get_observation_specification``, ``_get_action_specification``, ``register``); LocoMujoco does
not install next to this project's numpy/mujoco pins, so this module is untested here (see
env_registry/README.md for what is and is not verified). The observation is LocoMujoco's own
(joint positions without the horizontal pelvis position, and joint velocities); the gait
reference and reward of this project live in the brax/gymnasium environments.
"""

from __future__ import annotations

from loco_mujoco.core import ObservationType
from loco_mujoco.core.utils import info_property
from loco_mujoco.environments.base import LocoEnv

from .config import GaitImitationConfig
from .task import make_task

# Observed like LocoMujoco's humanoids: the root without its horizontal position.
_HORIZONTAL = ("pelvis_tx", "pelvis_tz")


class MjxBiomechGaitImitation(LocoEnv):
    """The lower-body model (or ``config.model``) with its joint motors and pelvis residual motors."""

    mjx_enabled = False

    def __init__(self, reference="synthetic", config: GaitImitationConfig | None = None, spec=None,
                 observation_spec=None, actuation_spec=None, **kwargs):  # fmt: skip
        self.gait_task = make_task(config, reference)
        if spec is None:
            spec = self.gait_task.body.model.spec.copy()
        if observation_spec is None:
            observation_spec = self._get_observation_specification(spec)
        else:
            observation_spec = self.parse_observation_spec(observation_spec)
        if actuation_spec is None:
            actuation_spec = self._get_action_specification(spec)
        kwargs.setdefault("timestep", self.gait_task.body.mj_model.opt.timestep)
        kwargs.setdefault("n_substeps", self.gait_task.config.substeps)
        super().__init__(spec=spec, actuation_spec=actuation_spec, observation_spec=observation_spec, **kwargs)

    @staticmethod
    def _get_observation_specification(spec):
        joints = [j.name for j in spec.joints]
        return [ObservationType.JointPos(f"q_{j}", xml_name=j) for j in joints if j not in _HORIZONTAL] + [
            ObservationType.JointVel(f"dq_{j}", xml_name=j) for j in joints
        ]

    @staticmethod
    def _get_action_specification(spec):
        return [a.name for a in spec.actuators]

    @classmethod
    def get_default_xml_file_path(cls) -> str:
        from mjx_biomech.body.loading import bundled_model_path

        return str(bundled_model_path())

    @info_property
    def root_body_name(self) -> str:
        return "pelvis"
