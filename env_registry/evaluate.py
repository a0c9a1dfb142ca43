"""``mjx-biomech evaluate POLICY``: roll a trained policy out on held-out reference trajectories
and measure its gait against the reference, as the paper does.

Each trajectory is followed from its first frame without reset noise, with the deterministic
policy, on MuJoCo's C engine (the policy is trained on MJX: the evaluation also checks that it
transfers), until the reference ends or the episode ends (fall, negative reward). Reported, after
skipping the first 45 frames (the body settling into the motion):

- hip flexion and knee angle RMSE and bias-removed RMSE (degrees), each side;
- walking speed per gait cycle (pelvis displacement between right-foot strikes, m/s);
- step length and step width at foot strike (heel contact spheres, m);
- foot-contact events from ground penetration with hysteresis: the simulated foot is in contact
  once its lowest contact sphere penetrates the floor (z < 0) until it rises 1 cm above it; the
  reference foot within 2 cm of the floor (a kinematic reference does not penetrate). Strikes
  are matched one to one to the reference's by the Hungarian algorithm, pairs more than 500 ms
  apart dropped; the timing errors are reported.

Writes ``report.json`` and ``plots/<trajectory>.png`` (tracked against reference hip and knee
angles) into ``--out`` (default: ``<policy folder>/evaluation``).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

from mjx_biomech.analysis import metrics
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic

from .config import GaitImitationConfig

SKIP_FRAMES = 45
JOINTS = ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l")
SIM_CONTACT_THRESHOLD = 0.0
REF_CONTACT_THRESHOLD = 0.02
CONTACT_HYSTERESIS = 0.01
MAX_EVENT_OFFSET = 0.5


def load_policy(path: Path):
    """``(make_policy, params, record)`` from a training folder (or its ``policy.pkl``)."""
    from brax.training.acme import running_statistics
    from brax.training.agents.ppo import networks as ppo_networks

    from .train import network_factory

    path = Path(path)
    if not path.exists():
        raise InputError(f"POLICY: {path} not found; expected a folder written by 'mjx-biomech train' or its policy.pkl")
    folder = path if path.is_dir() else path.parent
    policy_file = path if path.is_file() else folder / "policy.pkl"
    config_file = folder / "config.json"
    for f in (policy_file, config_file):
        if not f.exists():
            raise InputError(f"POLICY: {f} not found; expected a folder written by 'mjx-biomech train'")
    try:
        record = json.loads(config_file.read_text())
        ppo = record["ppo"]
        hidden = (ppo["policy_hidden"], ppo["value_hidden"], ppo.get("init_noise_std", 1.0))
        sizes = (record["observation_size"], record["action_size"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{config_file}: not a config written by 'mjx-biomech train' ({type(e).__name__}: {e})") from None
    try:
        params = pickle.loads(policy_file.read_bytes())
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise InputError(f"{policy_file}: not a policy written by 'mjx-biomech train' ({type(e).__name__}: {e})") from None
    factory = network_factory(*hidden)
    preprocess = running_statistics.normalize if ppo.get("normalize_observations") else (lambda x, y: x)
    networks = factory(*sizes, preprocess_observations_fn=preprocess)
    make_policy = ppo_networks.make_inference_fn(networks)
    return make_policy, params, record


def rollout(env, policy, trajectory: int, seed: int = 0) -> dict:
    """Follow reference ``trajectory`` from frame 0 to its end (or the episode's) without reset
    noise, on MuJoCo's C engine (``env``: a :class:`.gym_env.GaitImitationGymEnv`).

    ``policy(obs) -> action`` (NumPy). Returns NumPy arrays over the T visited states: ``qpos``
    (T, nq), ``foot`` (T, G, 3) contact sphere centres, ``pelvis`` (T, 3); over the T − 1 steps:
    ``reward``; and ``ended_early`` (a fall, a negative reward or an unstable state).
    """
    body, d = env.task.body, env.data
    env.reset(seed=seed)  # seeds the observation noise
    obs, _ = env.reset_to(trajectory, 0, 0.0)
    record = {"qpos": [], "foot": [], "pelvis": [], "reward": []}

    def snapshot():
        record["qpos"].append(d.qpos.copy())
        record["foot"].append(d.geom_xpos[body.foot_geoms].copy())
        record["pelvis"].append(d.xpos[body.pelvis_body].copy())

    snapshot()
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        snapshot()
        record["reward"].append(reward)
    out = {k: np.asarray(v) for k, v in record.items()}
    out["ended_early"] = bool(terminated)
    return out


def _reference_feet(task, n: int, frames: int) -> np.ndarray:
    import mujoco

    m = task.body.mj_model
    d = mujoco.MjData(m)
    out = np.empty((frames, len(task.body.foot_geoms), 3))
    for k in range(frames):
        d.qpos[:] = task.targets.qpos[n, k]
        mujoco.mj_kinematics(m, d)
        out[k] = d.geom_xpos[task.body.foot_geoms]
    return out


def _foot_heights(task, foot_xyz: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heel z, toe z) lowest points (m) and heel centre (T, 3) of one foot."""
    m = task.body.mj_model
    names = [m.geom(int(g)).name for g in task.body.foot_geoms]
    radius = m.geom_size[task.body.foot_geoms, 0]
    heel = names.index(f"foot_contact_heel_{side}")
    toe = names.index(f"foot_contact_toe_{side}")
    return foot_xyz[:, heel, 2] - radius[heel], foot_xyz[:, toe, 2] - radius[toe], foot_xyz[:, heel]


def gait_report(task, sim: dict, n: int) -> dict:
    """Metrics of one rollout against reference trajectory ``n`` (see the module docstring)."""
    fps = task.config.fps
    valid = len(sim["qpos"])
    ref_qpos = task.targets.qpos[n, :valid]
    qpos = sim["qpos"]
    m = task.body.mj_model
    out: dict = {"trajectory": task.reference.names[n], "frames": valid, "ended_early": sim["ended_early"],
                 "mean_reward": float(np.mean(sim["reward"]))}  # fmt: skip
    window = slice(SKIP_FRAMES, valid)
    if valid <= SKIP_FRAMES + 1:
        out["note"] = f"episode ended after {valid} frames, before the {SKIP_FRAMES} skipped frames were over"
        return out
    for joint in JOINTS:
        adr = m.jnt_qposadr[m.joint(joint).id]
        a, b = np.degrees(qpos[window, adr]), np.degrees(ref_qpos[window, adr])
        out[f"{joint}_rmse_deg"] = float(metrics.rmse(a, b))
        out[f"{joint}_bias_removed_rmse_deg"] = float(metrics.bias_removed_rmse(a, b))
    ref_feet = _reference_feet(task, n, valid)
    events, ref_events, heels, ref_heels = {}, {}, {}, {}
    for side in ("r", "l"):
        heel_z, toe_z, heel = _foot_heights(task, sim["foot"][:valid], side)
        rheel_z, rtoe_z, rheel = _foot_heights(task, ref_feet, side)
        events[side] = metrics.gait_events(heel_z, toe_z, fps, SIM_CONTACT_THRESHOLD, CONTACT_HYSTERESIS)
        ref_events[side] = metrics.gait_events(rheel_z, rtoe_z, fps, REF_CONTACT_THRESHOLD, CONTACT_HYSTERESIS)
        heels[side], ref_heels[side] = heel, rheel
        match = metrics.match_events(events[side].strike_times, ref_events[side].strike_times, MAX_EVENT_OFFSET)
        out[f"strikes_{side}"] = int(len(events[side].strike_frames))
        out[f"reference_strikes_{side}"] = int(len(ref_events[side].strike_frames))
        out[f"matched_strikes_{side}"] = int(len(match.errors))
        out[f"strike_timing_errors_{side}_s"] = match.errors.tolist()
    strikes_r = events["r"].strike_frames
    if len(strikes_r) >= 2:
        out["walking_speed_per_cycle_mps"] = metrics.walking_speed_per_cycle(sim["pelvis"][:valid], strikes_r, fps).tolist()
    ref_strikes_r = ref_events["r"].strike_frames
    if len(ref_strikes_r) >= 2:
        ref_pelvis = task.targets.qpos[n, :valid]  # pelvis_tx/ty/tz are qpos 0..2 in OpenSim axes
        out["reference_walking_speed_per_cycle_mps"] = metrics.walking_speed_per_cycle(
            np.stack([ref_pelvis[:, 0], -ref_pelvis[:, 2], ref_pelvis[:, 1]], axis=1), ref_strikes_r, fps
        ).tolist()
    if len(events["r"].strike_frames) + len(events["l"].strike_frames) >= 1:
        try:
            steps_ = metrics.step_metrics(heels["l"], heels["r"], events["l"].strike_frames, events["r"].strike_frames, pelvis=sim["pelvis"][:valid])
            out["step_length_m"] = steps_.step_length.tolist()
            out["step_width_m"] = steps_.step_width.tolist()
        except InputError as e:
            out["step_note"] = str(e)
    return out


def plot_tracking(task, sim: dict, n: int, path: Path, frames: int) -> Path:
    """PNG of simulated against reference hip flexion and knee angles (degrees) over time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = task.body.mj_model
    t = np.arange(frames) / task.config.fps
    fig = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(fig)
    for i, joint in enumerate(JOINTS):
        ax = fig.add_subplot(2, 2, i + 1)
        adr = m.jnt_qposadr[m.joint(joint).id]
        ax.plot(t, np.degrees(task.targets.qpos[n, :frames, adr]), "k--", label="reference")
        ax.plot(t, np.degrees(sim["qpos"][:frames, adr]), "C0", label="simulated")
        ax.axvspan(0, SKIP_FRAMES / task.config.fps, color="0.9")
        ax.set_title(joint)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("angle (deg)")
        if i == 0:
            ax.legend(loc="best")
    fig.suptitle(task.reference.names[n])
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def policy_function(make_policy, params):
    """A NumPy ``policy(obs) -> action`` of the deterministic policy (jitted once)."""
    import jax
    import jax.numpy as jnp

    inference = jax.jit(make_policy(params, deterministic=True))
    key = jax.random.PRNGKey(0)
    return lambda obs: np.asarray(inference(jnp.asarray(obs), key)[0], dtype=np.float64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", type=Path, help="a folder written by 'mjx-biomech train' (or its policy.pkl)")
    parser.add_argument("--reference", default="synthetic:2:1000", help="held-out trajectories: 'synthetic[:N[:FIRST_SEED]]', a .mot file or a fit folder (default: two unseen synthetic people)")
    parser.add_argument("--out", type=Path, help="output folder (default: <policy folder>/evaluation)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from .gym_env import GaitImitationGymEnv

    make_policy, params, record = load_policy(args.policy)
    folder = args.policy if args.policy.is_dir() else args.policy.parent
    out = args.out or folder / "evaluation"
    if (out / "report.json").exists():
        raise InputError(f"--out: {out} already holds an evaluation (report.json); choose another folder")
    env = GaitImitationGymEnv(GaitImitationConfig.from_dict(record["env"]), reference=args.reference)
    if env.task.observation_size != record["observation_size"] or env.task.action_size != record["action_size"]:
        raise InputError(f"{args.policy}: the policy was trained for other observation/action sizes than this environment's")
    policy = policy_function(make_policy, params)
    task = env.task
    reports = []
    for n in track(range(task.reference.num_trajectories), description="evaluate"):
        sim = rollout(env, policy, n, args.seed)
        reports.append(gait_report(task, sim, n))
        plot_tracking(task, sim, n, out / "plots" / f"{task.reference.names[n].replace(':', '_')}.png", reports[-1]["frames"])
    write_text_atomic(out / "report.json", json.dumps({"policy": str(args.policy), "reference": args.reference, "trajectories": reports}, indent=2))
    table = Table(title=f"gait metrics after the first {SKIP_FRAMES} frames")
    table.add_column("trajectory")
    table.add_column("frames followed")
    for joint in JOINTS:
        table.add_column(f"{joint} RMSE / bias-removed (°)")
    table.add_column("speed (m/s)")
    table.add_column("strike timing (ms)")
    for r in reports:
        cells = [
            f"{r[f'{j}_rmse_deg']:.1f} / {r[f'{j}_bias_removed_rmse_deg']:.1f}" if f"{j}_rmse_deg" in r else "–"
            for j in JOINTS
        ]
        speed = r.get("walking_speed_per_cycle_mps", [])
        timing = r.get("strike_timing_errors_r_s", []) + r.get("strike_timing_errors_l_s", [])
        table.add_row(
            r["trajectory"], f"{r['frames']}{' (ended early)' if r['ended_early'] else ''}", *cells,
            f"{np.mean(speed):.2f}" if speed else "–",
            f"{1000 * np.mean(np.abs(timing)):.0f}" if timing else "–",
        )  # fmt: skip
    Console().print(table)
    print(f"report: {out / 'report.json'}")
    return 0
