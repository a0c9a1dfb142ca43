"""Check a converted model against OpenSim: ``python -m converters.validate MODEL.osim``.

The model is converted, then OpenSim 4.6 and MuJoCo's C engine place every marker and body
origin at random poses (unlocked coordinates uniform within their ranges, coupled ones
following their couplers, float64). The largest distance is the converter's error; above
``TOLERANCE_M`` the command exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mujoco
import numpy as np

from converters import osim
from mjx_biomech.body import functions

TOLERANCE_M = 1e-6
# Coordinates with effectively unbounded ranges are sampled within these bounds.
_UNBOUNDED = {"rotational": np.pi, "translational": 1.0}
# OpenSim ground axes in the MuJoCo world: p -> (p_x, -p_z, p_y).
GROUND_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def read_metadata(mj_model: mujoco.MjModel) -> dict:
    """The ``mjx_biomech`` metadata dict stored in a converted model's custom text."""
    text_id = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_TEXT, "mjx_biomech")
    if text_id < 0:
        raise ValueError("the model has no <custom><text name='mjx_biomech'> metadata")
    start, size = mj_model.text_adr[text_id], mj_model.text_size[text_id]
    return json.loads(bytes(mj_model.text_data[start : start + size - 1]).decode())


def sample_coordinates(metadata: dict, poses: int, seed: int) -> np.ndarray:
    """(poses, C) coordinate values: unlocked uniform within range, locked at their default."""
    rng = np.random.default_rng(seed)
    columns = []
    for c in metadata["coordinates"]:
        if c["locked"]:
            columns.append(np.full(poses, c["default"], dtype=float))
            continue
        bound = _UNBOUNDED[c["motion"]]
        lo, hi = np.clip(c["range"], -bound, bound) if max(map(abs, c["range"])) > 1e3 else c["range"]
        columns.append(rng.uniform(lo, hi, poses))
    return np.stack(columns, axis=1) if columns else np.zeros((poses, 0))


def all_coordinate_values(metadata: dict, values: np.ndarray) -> dict[str, float]:
    """Every OpenSim coordinate's value: the independent ones and those their couplers set."""
    named = {c["name"]: float(v) for c, v in zip(metadata["coordinates"], values)}
    for coupled in metadata["opensim"].get("coupled_coordinates", []):
        named[coupled["name"]] = float(functions.build(coupled["function"], np)(named[coupled["input"]]))
    return named


def qpos_from_coordinates(mj_model: mujoco.MjModel, metadata: dict, values: np.ndarray) -> np.ndarray:
    """MuJoCo qpos for one pose of the independent coordinates (C,), dependent joints filled in."""
    qpos = mj_model.qpos0.copy()
    named = {c["name"]: float(v) for c, v in zip(metadata["coordinates"], values)}

    def address(joint: str) -> int:
        return mj_model.jnt_qposadr[mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_JOINT, joint)]

    for c in metadata["coordinates"]:
        if c["joint"] is not None:
            qpos[address(c["joint"])] = named[c["name"]]
    for dep in metadata["dependent_joints"]:
        x = named[dep["input"]] if dep["input"] is not None else 0.0
        qpos[address(dep["joint"])] = functions.build(dep["function"], np)(x)
    return qpos


def _vec(v) -> np.ndarray:
    return np.array([v.get(0), v.get(1), v.get(2)])


def validate(osim_path: str | Path, poses: int = 100, seed: int = 0) -> dict:
    """Convert ``osim_path`` and compare markers and body origins with OpenSim at random poses.

    Returns ``{"model", "poses", "max_error_m", "markers": {name: max error m},
    "bodies": {name: max error m}}``.
    """
    import opensim

    mj_model = mujoco.MjModel.from_xml_string(osim.to_mjcf(osim_path))
    data = mujoco.MjData(mj_model)
    metadata = read_metadata(mj_model)
    os_model = opensim.Model(str(osim_path))
    state = os_model.initSystem()
    coordinate_set = os_model.getCoordinateSet()
    markers = [os_model.getMarkerSet().get(i) for i in range(os_model.getMarkerSet().getSize())]
    bodies = [os_model.getBodySet().get(i) for i in range(os_model.getBodySet().getSize())]
    site_ids = [mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_SITE, m.getName()) for m in markers]
    body_ids = [mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, b.getName()) for b in bodies]
    locked = {c["name"] for c in metadata["coordinates"] if c["locked"]}
    marker_error = np.zeros(len(markers))
    body_error = np.zeros(len(bodies))
    for values in sample_coordinates(metadata, poses, seed):
        for name, value in all_coordinate_values(metadata, values).items():
            if name not in locked:
                coordinate_set.get(name).setValue(state, value, False)
        os_model.realizePosition(state)
        data.qpos[:] = qpos_from_coordinates(mj_model, metadata, values)
        mujoco.mj_kinematics(mj_model, data)
        for i, (marker, site) in enumerate(zip(markers, site_ids)):
            expected = GROUND_TO_WORLD @ _vec(marker.getLocationInGround(state))
            marker_error[i] = max(marker_error[i], np.linalg.norm(data.site_xpos[site] - expected))
        for i, (body, body_id) in enumerate(zip(bodies, body_ids)):
            expected = GROUND_TO_WORLD @ _vec(body.getPositionInGround(state))
            body_error[i] = max(body_error[i], np.linalg.norm(data.xpos[body_id] - expected))
    errors = np.concatenate([marker_error, body_error])
    return {
        "model": str(osim_path),
        "poses": poses,
        "max_error_m": float(errors.max()) if errors.size else 0.0,
        "markers": {m.getName(): float(e) for m, e in zip(markers, marker_error)},
        "bodies": {b.getName(): float(e) for b, e in zip(bodies, body_error)},
    }


def _print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{Path(result['model']).name} vs OpenSim, {result['poses']} random poses")
    for column in ("elements", "count", "max error (m)", "worst"):
        table.add_column(column)
    for kind in ("markers", "bodies"):
        errors = result[kind]
        worst = max(errors, key=errors.get) if errors else "-"
        table.add_row(kind, str(len(errors)), f"{max(errors.values(), default=0.0):.3e}", worst)
    Console().print(table)
    print(f"max_error_m={result['max_error_m']:.3e}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="OpenSim model (.osim)")
    parser.add_argument("--poses", type=int, default=100, help="random poses (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Validate, print the report (last line ``max_error_m=...``); 1 above the tolerance."""
    result = validate(args.model, poses=args.poses, seed=args.seed)
    _print_report(result)
    return 0 if result["max_error_m"] <= TOLERANCE_M else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
