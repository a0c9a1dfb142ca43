"""The gait-imitation environment on MuJoCo's C engine, with gymnasium's interface (for CPU users).

It shares the task (body, reference, targets) and the observation, reward and control arithmetic
(:mod:`.tracking`) with the MJX environment; episodes start and end by the same rules (see
:mod:`.mjx_env`). ``terminated`` is a fall, a negative reward or an unstable state;
``truncated`` is the end of the reference. ``info`` names how the step ended (``end``: None,
``"reference_end"``, ``"fall"``, ``"negative_reward"`` or ``"unstable"``) and the pelvis residual
force as a fraction of body weight (``residual_force``).

Each trajectory is walked by its person's body (``per_person_body``): an episode runs on the
person's statically scaled MuJoCo model (``BiomechModel.to_mujoco``), compiled once per person and
kept with its ``MjData``.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from . import tracking
from .config import GaitImitationConfig
from .task import GaitTask, make_task


class GaitImitationGymEnv(gym.Env):
    """``gymnasium.make("mjx_biomech/GaitImitation-v0", reference=..., **config_fields)``."""

    metadata = {"render_modes": []}

    def __init__(self, config: GaitImitationConfig | None = None, reference="synthetic", task: GaitTask | None = None, **overrides):
        self.task = task if task is not None else make_task(config, reference, **overrides)
        body = self.task.body
        self.model = body.mj_model
        self.data = mujoco.MjData(self.model)
        # Per person's model (by identity): its MjData.
        self._data = {id(self.model): self.data}
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.task.observation_size,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.task.action_size,), np.float32)
        self._joint_noise = np.zeros(self.model.nq, bool)
        self._joint_noise[self.task.non_pelvis_qpos] = True
        self._traj = 0
        self._frame = 0

    @property
    def dt(self) -> float:
        return self.task.dt

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c, t = self.task.config, self.task.targets
        n = int(self.np_random.integers(len(t.lengths)))
        frame = int(self.np_random.integers(0, self.task.last_start(t.lengths[n]) + 1))
        return self.reset_to(n, frame, c.reset_noise)

    def reset_to(self, n: int, frame: int, noise: float):
        """Start at reference trajectory ``n``, ``frame``, with joint angles and velocities
        perturbed uniformly by ±``noise`` (rad, rad/s, m/s); returns ``(obs, info)``."""
        self.model = m = self.task.person_model(n)
        if id(m) not in self._data:
            self._data[id(m)] = mujoco.MjData(m)
        self.data = d = self._data[id(m)]
        t, rng = self.task.targets, self.np_random
        mujoco.mj_resetData(m, d)
        d.qpos[:] = t.qpos[n, frame] + np.where(self._joint_noise, rng.uniform(-1, 1, m.nq), 0.0) * noise
        d.qvel[:] = t.qvel[n, frame] + rng.uniform(-1, 1, m.nv) * noise
        mujoco.mj_kinematics(m, d)
        foot = self.task.body.foot_geoms
        lowest = tracking.lowest_foot_point(d.geom_xpos[foot, 2], m.geom_size[foot, 0])
        d.qpos[self.task.pelvis_ty_qpos] += max(tracking.RESET_CLEARANCE_M - lowest, 0.0)
        d.userdata[:] = (n, frame)
        mujoco.mj_forward(m, d)
        self._traj, self._frame = n, frame
        return self._observation(), {"trajectory": n, "frame": frame}

    def step(self, action):
        task, body, c, t, m, d = self.task, self.task.body, self.task.config, self.task.targets, self.model, self.data
        action = np.asarray(action, dtype=np.float64)
        keypoints0 = d.site_xpos[t.keypoint_sites].copy()
        n, nxt = self._traj, self._frame + 1
        mass = float(m.body_mass.sum())
        for _ in range(c.substeps):
            u = task.controls(action, d.qpos, d.qvel, t.qpos[n, nxt], t.qvel[n, nxt], mass, t.heights[n], c.assist_final)
            d.ctrl[body.joint_actuators] = u[: task.num_joints]
            d.ctrl[body.pelvis_actuators] = u[task.num_joints :]
            mujoco.mj_step(m, d)
        mujoco.mj_forward(m, d)
        self._frame += 1
        d.userdata[1] = self._frame
        n, frame = self._traj, self._frame
        errors = task.step_errors(t, n, frame, d.qpos, d.site_xpos[t.keypoint_sites], keypoints0)
        reward = float(task.reward(errors, action))
        stable, fallen, out_of_frames = task.step_end(t, n, frame, d.qpos, d.qvel, d.xpos[body.pelvis_body, 2], reward)
        stable = bool(stable)
        terminated = bool(fallen or reward < 0 or not stable)
        truncated = bool(out_of_frames) and not terminated
        end = ("unstable" if not stable else "fall" if fallen else "negative_reward" if reward < 0
               else "reference_end" if truncated else None)  # fmt: skip
        info = {"trajectory": n, "frame": frame, "angle_error": float(errors.angle),
                "position_error": float(errors.position), "velocity_error": float(errors.velocity),
                "residual_force": float(task.residual_force_fraction(d.ctrl, task.weight(m.body_mass))), "end": end}  # fmt: skip
        return self._observation(), reward if stable else 0.0, terminated, truncated, info

    def _observation(self) -> np.ndarray:
        task, body, c, t, d = self.task, self.task.body, self.task.config, self.task.targets, self.data
        n, frame = self._traj, self._frame
        obs = tracking.observation(
            d.xpos[body.pelvis_body, 2],
            d.xmat[body.segments].reshape(-1, 3, 3),
            d.cvel[body.segments, :3],
            d.qpos[task.non_pelvis_qpos],
            d.qvel,
            d.site_xpos[t.keypoint_sites],
            t.keypoints[n, frame + 1 : frame + 1 + c.future_frames],
            t.keypoints[n, frame, t.pelvis_keypoint],
            t.pelvis_keypoint,
            t.heights[n],
        )
        obs = obs + c.observation_noise * self.np_random.standard_normal(obs.shape)
        return tracking.bounded(obs).astype(np.float64)
