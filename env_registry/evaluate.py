"""``mjx-biomech evaluate POLICY``: roll a trained policy out on held-out reference trajectories
and measure its gait against the reference, as the paper does.

Each trajectory is followed from its first frame without reset noise, with the deterministic
policy, on MuJoCo's C engine (the policy is trained on MJX: the evaluation also checks that it
transfers), until the reference ends or the episode ends (fall, negative reward, unstable state).
The simulated and the reference motion are measured by the same rules, from their joint
coordinates through MuJoCo's kinematics, so that the reference fed in as the rollout scores
perfectly. Reported, after skipping the first 45 frames (the body settling into the motion):

- the fraction of the reference followed before the episode ended, and how it ended;
- hip flexion and knee angle RMSE and bias-removed RMSE (degrees), each side;
- foot-contact events from ground penetration with hysteresis: a foot is in contact once the
  lowest point of its contact spheres is below 5 mm (a kinematic reference touches the floor, a
  simulated foot sinks into it) until it rises above 15 mm; a contact shorter than 100 ms (a
  swinging foot scuffing the floor) is not a stance and makes no strike. Strikes are matched one to one to the
  reference's by the Hungarian algorithm, pairs more than 500 ms apart dropped; the timing
  errors are reported;
- step length and step width at each foot strike, from the heel sphere centres, along and across
  the walking direction (the principal axis of the reference pelvis's horizontal path);
- walking speed per gait cycle: the heel's displacement along the walking direction between two
  strikes of the same foot, divided by the cycle's duration;
- the mean pelvis residual force as a fraction of body weight.

Writes ``report.json`` (each trajectory, and a summary) and ``plots/<trajectory>.png`` (tracked
against reference hip and knee angles) into ``--out`` (default: ``<policy folder>/evaluation``).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mjx_biomech.analysis import metrics
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic

from .config import GaitImitationConfig

SKIP_FRAMES = 45
JOINTS = ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l")
SIDES = ("r", "l")
CONTACT_THRESHOLD = 0.005
CONTACT_HYSTERESIS = 0.01
# A contact shorter than this is a swinging foot scuffing the floor, not a stance (which lasts
# ~0.6 s in walking, ~0.2 s in running): it makes no foot strike.
MIN_CONTACT = 0.1
MAX_EVENT_OFFSET = 0.5
ENDS = ("reference_end", "fall", "negative_reward", "unstable")


def load_policy(path: Path):
    """``(make_policy, params, record)`` from a training folder (or its ``policy.pkl``)."""
    from brax.training.acme import running_statistics
    from brax.training.agents.ppo import networks as ppo_networks

    from .train import network_factory, network_options

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
        hidden = (ppo["policy_hidden"], ppo["value_hidden"])
        options = network_options(ppo)
        sizes = (record["observation_size"], record["action_size"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{config_file}: not a config written by 'mjx-biomech train' ({type(e).__name__}: {e})") from None
    try:
        params = pickle.loads(policy_file.read_bytes())
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise InputError(f"{policy_file}: not a policy written by 'mjx-biomech train' ({type(e).__name__}: {e})") from None
    factory = network_factory(*hidden, **options)
    preprocess = running_statistics.normalize if ppo.get("normalize_observations") else (lambda x, y: x)
    networks = factory(*sizes, preprocess_observations_fn=preprocess)
    make_policy = ppo_networks.make_inference_fn(networks)
    return make_policy, params, record


def rollout(env, policy, trajectory: int, seed: int = 0) -> dict:
    """Follow reference ``trajectory`` from frame 0 to its end (or the episode's) without reset
    noise, on MuJoCo's C engine (``env``: a :class:`.gym_env.GaitImitationGymEnv`).

    ``policy(obs) -> action`` (NumPy). Returns ``qpos`` (T, nq) over the T visited states;
    ``reward`` and ``residual_force`` (fraction of body weight) over the T − 1 steps; and ``end``,
    how the episode ended (one of :data:`ENDS`).
    """
    env.reset(seed=seed)  # seeds the observation noise
    obs, _ = env.reset_to(trajectory, 0, 0.0)
    d = env.data  # the person's (reset_to picks it)
    record = {"qpos": [d.qpos.copy()], "reward": [], "residual_force": []}
    end = None
    while end is None:
        obs, reward, _, _, info = env.step(policy(obs))
        record["qpos"].append(d.qpos.copy())
        record["reward"].append(reward)
        record["residual_force"].append(info["residual_force"])
        end = info["end"]
    out = {k: np.asarray(v, dtype=float) for k, v in record.items()}
    out["end"] = end
    return out


class Gait(NamedTuple):
    """What the gait metrics read from a motion of T frames: the pelvis (T, 3) and heel sphere
    centres (T, 3) per side, m; the lowest point of each foot's contact spheres (T,) per side, m."""

    pelvis: np.ndarray
    heel: dict
    foot_low: dict


def gait_kinematics(task, qpos: np.ndarray, n: int) -> Gait:
    """:class:`Gait` of the states ``qpos`` (T, nq) of the body of trajectory ``n``'s person
    (MuJoCo C kinematics)."""
    import mujoco

    body = task.body
    m = task.person_model(n)
    d = mujoco.MjData(m)
    names = [m.geom(int(g)).name for g in body.foot_geoms]
    feet = {s: np.array([g for g, name in zip(body.foot_geoms, names) if name.endswith(f"_{s}")]) for s in SIDES}
    heel = {s: m.geom(f"foot_contact_heel_{s}").id for s in SIDES}
    pelvis = np.empty((len(qpos), 3))
    heels = {s: np.empty((len(qpos), 3)) for s in SIDES}
    low = {s: np.empty(len(qpos)) for s in SIDES}
    for k, q in enumerate(qpos):
        d.qpos[:] = q
        mujoco.mj_kinematics(m, d)
        pelvis[k] = d.xpos[body.pelvis_body]
        for s in SIDES:
            heels[s][k] = d.geom_xpos[heel[s]]
            low[s][k] = np.min(d.geom_xpos[feet[s], 2] - m.geom_size[feet[s], 0])
    return Gait(pelvis, heels, low)


def walking_direction(task, n: int) -> np.ndarray:
    """Unit horizontal (2,) direction of reference trajectory ``n``: the principal axis of its
    pelvis's horizontal path, signed along its displacement (:func:`metrics.walking_direction`)."""
    pelvis = gait_kinematics(task, task.targets.qpos[n, : task.targets.lengths[n]], n).pelvis
    try:
        return metrics.walking_direction(pelvis)
    except InputError as e:
        raise InputError(f"reference: {task.reference.names[n]}: {e}") from None


def _events(gait: Gait, fps: float) -> dict:
    return {s: metrics.gait_events(gait.foot_low[s], None, fps, CONTACT_THRESHOLD, CONTACT_HYSTERESIS, MIN_CONTACT) for s in SIDES}


def _spatial(gait: Gait, strikes: dict, fps: float, direction) -> dict:
    """Step lengths and widths at the ``strikes`` (frames per side) and walking speed per cycle."""
    steps = metrics.step_metrics(gait.heel["l"], gait.heel["r"], strikes["l"], strikes["r"], direction=direction)
    cycles = sorted(
        (int(f0), float(v))
        for s in SIDES
        if len(strikes[s]) >= 2
        for f0, v in zip(strikes[s], metrics.walking_speed_per_cycle(gait.heel[s], strikes[s], fps, direction))
    )
    return {
        "step_length_m": steps.step_length.tolist(),
        "step_width_m": steps.step_width.tolist(),
        "walking_speed_per_cycle_mps": [v for _, v in cycles],
    }


def gait_report(task, sim: dict, n: int) -> dict:
    """Metrics of one rollout (:func:`rollout`) against reference trajectory ``n`` (see the module
    docstring)."""
    fps = task.config.fps
    m = task.body.mj_model
    valid = len(sim["qpos"])
    reachable = int(task.targets.lengths[n]) - task.config.future_frames
    ref_qpos = task.targets.qpos[n, :valid]
    out: dict = {
        "trajectory": task.reference.names[n],
        "frames": valid,
        "reference_frames": reachable,
        "fraction_followed": valid / reachable,
        "end": sim["end"],
        "mean_reward": float(np.mean(sim["reward"])) if len(sim["reward"]) else float("nan"),
        "residual_force_body_weight": float(np.mean(sim["residual_force"])) if len(sim["residual_force"]) else float("nan"),
    }
    if valid <= SKIP_FRAMES + 1:
        out["note"] = f"episode ended after {valid} frames, before the {SKIP_FRAMES} skipped frames were over"
        return out
    window = slice(SKIP_FRAMES, valid)
    for joint in JOINTS:
        adr = m.jnt_qposadr[m.joint(joint).id]
        a, b = np.degrees(sim["qpos"][window, adr]), np.degrees(ref_qpos[window, adr])
        out[f"{joint}_rmse_deg"] = float(metrics.rmse(a, b))
        out[f"{joint}_bias_removed_rmse_deg"] = float(metrics.bias_removed_rmse(a, b))
    gait, ref_gait = gait_kinematics(task, sim["qpos"], n), gait_kinematics(task, ref_qpos, n)
    events, ref_events = _events(gait, fps), _events(ref_gait, fps)
    strikes = {s: events[s].strike_frames[events[s].strike_frames >= SKIP_FRAMES] for s in SIDES}
    ref_strikes = {s: ref_events[s].strike_frames[ref_events[s].strike_frames >= SKIP_FRAMES] for s in SIDES}
    for s in SIDES:
        match = metrics.match_events(strikes[s] / fps, ref_strikes[s] / fps, MAX_EVENT_OFFSET)
        out[f"strike_frames_{s}"] = strikes[s].tolist()
        out[f"reference_strike_frames_{s}"] = ref_strikes[s].tolist()
        out[f"matched_strikes_{s}"] = len(match.errors)
        out[f"strike_timing_errors_{s}_s"] = match.errors.tolist()
    direction = walking_direction(task, n)
    out.update(_spatial(gait, strikes, fps, direction))
    out.update({f"reference_{k}": v for k, v in _spatial(ref_gait, ref_strikes, fps, direction).items()})
    speed, ref_speed = out["walking_speed_per_cycle_mps"], out["reference_walking_speed_per_cycle_mps"]
    if speed and ref_speed:
        out["walking_speed_error_pct"] = float(100 * (np.mean(speed) / np.mean(ref_speed) - 1))
    return out


def summary(reports: list[dict]) -> dict:
    """Means over the trajectories of the main metrics, and how many episodes ended each way."""

    def mean(key):
        values = [r[key] for r in reports if key in r and np.isfinite(r[key])]
        return float(np.mean(values)) if values else None

    timing = [abs(e) for r in reports for s in SIDES for e in r.get(f"strike_timing_errors_{s}_s", [])]
    return {
        "trajectories": len(reports),
        "ends": {end: sum(r["end"] == end for r in reports) for end in ENDS},
        "fraction_followed": mean("fraction_followed"),
        **{f"{j}_rmse_deg": mean(f"{j}_rmse_deg") for j in JOINTS},
        "walking_speed_error_pct": mean("walking_speed_error_pct"),
        "strike_timing_error_ms": 1000 * float(np.mean(timing)) if timing else None,
        "residual_force_body_weight": mean("residual_force_body_weight"),
    }


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
    report = {"policy": str(args.policy), "reference": args.reference, "summary": summary(reports), "trajectories": reports}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    table = Table(title=f"gait metrics after the first {SKIP_FRAMES} frames")
    for column in ("trajectory", "followed", *(f"{j} RMSE / bias-removed (°)" for j in JOINTS), "speed / reference (m/s)",
                   "strike timing (ms)", "residual force (× body weight)"):  # fmt: skip
        table.add_column(column)
    for r in reports:
        cells = [
            f"{r[f'{j}_rmse_deg']:.1f} / {r[f'{j}_bias_removed_rmse_deg']:.1f}" if f"{j}_rmse_deg" in r else "–"
            for j in JOINTS
        ]
        speed, ref_speed = r.get("walking_speed_per_cycle_mps", []), r.get("reference_walking_speed_per_cycle_mps", [])
        timing = r.get("strike_timing_errors_r_s", []) + r.get("strike_timing_errors_l_s", [])
        table.add_row(
            r["trajectory"], f"{100 * r['fraction_followed']:.0f} % ({r['end']})", *cells,
            f"{np.mean(speed):.2f} / {np.mean(ref_speed):.2f}" if speed and ref_speed else "–",
            f"{1000 * np.mean(np.abs(timing)):.0f}" if timing else "–",
            f"{r['residual_force_body_weight']:.2f}",
        )  # fmt: skip
    Console().print(table)
    ends = report["summary"]["ends"]
    print(f"episodes: {len(reports)}; ended: " + ", ".join(f"{k} {v}" for k, v in ends.items()))
    print(f"report: {out / 'report.json'}")
    return 0
