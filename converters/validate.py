"""Check a converted model against OpenSim: ``python -m converters.validate MODEL.osim``.

The model is converted and loaded as a :class:`mjx_biomech.BiomechModel`, then OpenSim 4.6 and
MuJoCo's C engine place every marker and body origin at random poses (unlocked coordinates
uniform within their ranges, coupled ones following their couplers, MuJoCo's dependent joints
by the core's coordinate functions, float64). The largest distance is the converter's error;
above ``TOLERANCE_M`` the command exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

import mjx_biomech
from converters import osim
from converters.opensim_frame import GROUND_TO_WORLD
from mjx_biomech.body import functions
from mjx_biomech.errors import InputError

TOLERANCE_M = 1e-6


def sample_coordinates(model: mjx_biomech.BiomechModel, poses: int, seed: int) -> np.ndarray:
    """(poses, C) float64 coordinates: :func:`mjx_biomech.sample_coordinates` (uniform within the
    ranges) from ``seed``, with locked coordinates at their default, where OpenSim holds them."""
    with jax.enable_x64(True):
        values = np.asarray(mjx_biomech.sample_coordinates(model, jax.random.PRNGKey(seed), poses), np.float64)
    locked = np.array([c.locked for c in model.coordinates], bool)
    return np.where(locked, [c.default for c in model.coordinates], values)


def all_coordinate_values(metadata: dict, values: np.ndarray) -> dict[str, float]:
    """Every OpenSim coordinate's value: the independent ones and those their couplers set."""
    named = {c["name"]: float(v) for c, v in zip(metadata["coordinates"], values)}
    for coupled in metadata["opensim"].get("coupled_coordinates", []):
        named[coupled["name"]] = float(functions.build(coupled["function"], np)(named[coupled["input"]]))
    return named


def qpos_from_coordinates(model: mjx_biomech.BiomechModel, coordinates: np.ndarray) -> np.ndarray:
    """(poses, nq) float64 MuJoCo qpos of the unscaled model for (poses, C) coordinates, dependent
    joints filled in by the core's rule (``model.coords_to_qpos``)."""
    with jax.enable_x64(True):
        params = model.default_params(jnp.float64)
        return np.asarray(jax.vmap(lambda q: model.coords_to_qpos(q, params))(jnp.asarray(coordinates, jnp.float64)))


def _vec(v) -> np.ndarray:
    return np.array([v.get(0), v.get(1), v.get(2)])


def validate(osim_path: str | Path, poses: int = 100, seed: int = 0) -> dict:
    """Convert ``osim_path`` and compare markers and body origins with OpenSim at random poses.

    Returns ``{"model", "poses", "max_error_m", "markers": {name: max error m},
    "bodies": {name: max error m}}``.
    """
    import opensim

    model = mjx_biomech.load_model(osim.load_spec(osim_path))
    mj_model, metadata = model.mj_model, model.metadata
    data = mujoco.MjData(mj_model)
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
    coordinates = sample_coordinates(model, poses, seed)
    for values, qpos in zip(coordinates, qpos_from_coordinates(model, coordinates)):
        for name, value in all_coordinate_values(metadata, values).items():
            if name not in locked:
                coordinate_set.get(name).setValue(state, value, False)
        os_model.realizePosition(state)
        data.qpos[:] = qpos
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
    """Validate, print the report (last line ``max_error_m=...``); 1 above the tolerance.

    Bad input (arguments, an unreadable or unconvertible model) raises :class:`InputError`.
    """
    if args.poses < 1:
        raise InputError(f"--poses {args.poses}: expected at least one random pose")
    result = validate(args.model, poses=args.poses, seed=args.seed)
    _print_report(result)
    return 0 if result["max_error_m"] <= TOLERANCE_M else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
