"""Conversion time of an OpenSim model and per-frame forward kinematics against OpenSim.

``python benchmarks/convert.py [MODEL.osim] [--frames N]`` (default: the shared Rajagopal2016).
Prints the conversion time (goal < 0.5 s for Rajagopal2016) and, in the same run, the time
per frame of OpenSim's realizePosition + marker positions, MuJoCo's C mj_kinematics and the
core's jitted, vmapped ``model.markers``, with their ratios.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

DEFAULT = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "opensim-models" / "Models" / "Rajagopal" / "Rajagopal2016.osim")


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import mujoco
    import opensim

    import mjx_biomech
    from converters import osim, validate

    warnings.simplefilter("ignore")  # meshes the shared models come without
    convert_s = _best(lambda: osim.to_mjcf(args.model))
    print(f"conversion of {args.model}: {convert_s * 1e3:.1f} ms (goal < 500 ms)")

    model = mjx_biomech.load_model(args.model)
    mj_model, metadata = model.mj_model, model.metadata
    coordinates = validate.sample_coordinates(model, args.frames, 0)
    qpos = validate.qpos_from_coordinates(model, coordinates)

    os_model = opensim.Model(args.model)
    state = os_model.initSystem()
    names = [c["name"] for c in metadata["coordinates"] if not c["locked"]]
    os_coords = [os_model.getCoordinateSet().get(n) for n in names]
    columns = [i for i, c in enumerate(metadata["coordinates"]) if not c["locked"]]
    markers = [os_model.getMarkerSet().get(i) for i in range(os_model.getMarkerSet().getSize())]

    def opensim_frames():
        for q in coordinates:
            for c, i in zip(os_coords, columns):
                c.setValue(state, float(q[i]), False)
            os_model.realizePosition(state)
            for m in markers:
                m.getLocationInGround(state)

    data = mujoco.MjData(mj_model)

    def mujoco_frames():
        for q in qpos:
            data.qpos[:] = q
            mujoco.mj_kinematics(mj_model, data)

    with jax.enable_x64(True):
        params = model.default_params(jnp.float64)
        batch = jnp.asarray(coordinates)
        markers_fn = jax.jit(jax.vmap(lambda q: model.markers(q, params)))
        markers_fn(batch).block_until_ready()
        core_s = _best(lambda: markers_fn(batch).block_until_ready()) / args.frames

    opensim_s = _best(opensim_frames, 1) / args.frames
    mujoco_s = _best(mujoco_frames) / args.frames
    print(f"per frame, {args.frames} frames, {len(markers)} markers:")
    print(f"  OpenSim realizePosition + markers: {opensim_s * 1e6:9.1f} us")
    print(f"  MuJoCo C mj_kinematics:            {mujoco_s * 1e6:9.1f} us  (OpenSim / MuJoCo = {opensim_s / mujoco_s:.1f}x)")
    print(f"  core model.markers (jit, vmap):    {core_s * 1e6:9.1f} us  (OpenSim / core = {opensim_s / core_s:.1f}x)")


if __name__ == "__main__":
    main()
