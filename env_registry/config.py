"""Configuration of the gait-imitation environments (the paper's values are the defaults)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mjx_biomech.errors import InputError

REWARDS = ("exp", "mse")
CONTROLS = ("torque", "pd", "reference_pd")


@dataclass(frozen=True)
class GaitImitationConfig:
    """Everything that defines a gait-imitation environment except its reference data.

    Attributes:
        model: ``"lower_body"`` (the paper's), ``"fullbody"``, or an MJCF/.osim path (see :mod:`.body`).
        future_frames: F ≥ 0 future reference frames in the observation.
        reward: ``"exp"`` or ``"mse"`` (formulas in :mod:`.tracking`), with the weights below.
        control: ``"torque"`` (joint torques + pelvis wrench), ``"pd"`` (setpoints in the joint range
            and gains per joint) or ``"reference_pd"`` (setpoints around the reference's next frame
            and gains per joint, a pelvis assist towards the reference; :func:`.tracking.reference_pd_control`).
        fps: control rate, Hz; substeps: physics steps per control step.
        reset_noise: half-width of the uniform noise added at reset to joint angles (rad) and to
            every velocity (rad/s, m/s).
        observation_noise: standard deviation of the Gaussian noise added to observations.
        fall_fraction: the body has fallen when the pelvis is below this fraction of the reference
            pelvis height.
        residual_force, residual_torque: N and N·m per unit control of the pelvis motors.
        torque_scale: factor on the body's joint motor gears (its largest joint torques).
        kp_max: largest PD stiffness, N·m/rad; damping_time: kd = kp·damping_time, s.
        setpoint_range: ``reference_pd``: largest setpoint offset from the reference, rad (m).
        assist_frequency: ``reference_pd``: natural frequency (Hz) of the critically damped pelvis
            assist towards the reference (translations: stiffness M·ω², rotations M·(h/4)²·ω², M the
            person's mass, h their height); 0: no assist.
        assist_final, assist_anneal_steps: ``reference_pd``: the assist's strength (a fraction of
            the above) falls linearly from 1 to ``assist_final`` over an environment's first
            ``assist_anneal_steps`` control steps (counted across its episodes: a curriculum for
            training) and stays at ``assist_final`` (no annealing when 0 steps); the gymnasium
            environment, which evaluates trained policies, runs at ``assist_final``.
        solver_iterations: constraint-solver iterations per physics step.
        armature: least rotor inertia of the joints, kg·m² (numerical stability, see :mod:`.body`).
        max_speed: a state with a generalised velocity above this (rad/s, m/s) is unstable and ends
            the episode.
        per_person_body: each trajectory is walked by its person's own body (the reference's
            ``params``, see :mod:`.people`): segment sizes, masses and inertias, marker sites and
            the tracking targets on them; False: the simulated body walks every trajectory.
        exp_alpha0, exp_alpha_*: weights of the exp-form reward (the paper's product form; α0 is
            not given by the paper); mse_*: weights of the MSE form (see :mod:`.tracking`).
    """

    model: str = "lower_body"
    future_frames: int = 4
    reward: str = "exp"
    control: str = "torque"
    fps: float = 30.0
    substeps: int = 16
    reset_noise: float = 0.15
    observation_noise: float = 1e-4
    fall_fraction: float = 0.6
    residual_force: float = 300.0
    residual_torque: float = 100.0
    torque_scale: float = 1.0
    kp_max: float = 300.0
    damping_time: float = 0.05
    setpoint_range: float = 0.5
    assist_frequency: float = 0.0
    assist_final: float = 1.0
    assist_anneal_steps: int = 0
    solver_iterations: int = 1
    armature: float = 0.05
    max_speed: float = 100.0
    per_person_body: bool = True
    exp_alpha0: float = 1.0
    exp_alpha_angle: float = 5.0
    exp_alpha_position: float = 2.5
    exp_alpha_velocity: float = 0.17
    mse_alpha0: float = 8.0
    mse_alpha_angle: float = 2.5
    mse_alpha_position: float = 3.9
    mse_alpha_velocity: float = 20.0
    mse_beta: float = 0.005

    def __post_init__(self):
        if not isinstance(self.future_frames, int) or self.future_frames < 0:
            raise InputError(f"future_frames: expected an integer F ≥ 0, got {self.future_frames!r}")
        if self.reward not in REWARDS:
            raise InputError(f"reward: expected one of {REWARDS}, got {self.reward!r}")
        if self.control not in CONTROLS:
            raise InputError(f"control: expected one of {CONTROLS}, got {self.control!r}")
        if not self.fps > 0:
            raise InputError(f"fps: expected > 0 Hz, got {self.fps}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise InputError(f"substeps: expected an integer ≥ 1, got {self.substeps!r}")
        for name in ("reset_noise", "observation_noise", "fall_fraction", "residual_force", "residual_torque", "kp_max",
                     "torque_scale", "setpoint_range", "assist_frequency", "assist_final"):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name}: expected a finite number ≥ 0, got {value!r}")
        if self.assist_final > 1:
            raise InputError(f"assist_final: expected a fraction of the assist in [0, 1], got {self.assist_final}")
        if not isinstance(self.assist_anneal_steps, int) or self.assist_anneal_steps < 0:
            raise InputError(f"assist_anneal_steps: expected an integer ≥ 0, got {self.assist_anneal_steps!r}")

    @classmethod
    def from_dict(cls, values: dict) -> GaitImitationConfig:
        """Build from a dict (e.g. a saved JSON config), naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
