"""Scale the bundled model to a person and open the result in MuJoCo and OpenSim.

Run: python examples/scale_a_person.py [--height 1.62] [--mass 58] [--out person]
Writes person/model.xml (MuJoCo) and person/model.osim (OpenSim; no opensim install needed).
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import mjx_biomech as mb
from converters import osim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=float, default=1.62, help="metres")
    parser.add_argument("--mass", type=float, default=58.0, help="kg")
    parser.add_argument("--out", default="person")
    args = parser.parse_args()

    model = mb.load_model()
    params = model.scale_params(overall=args.height / model.standing_height())
    q = model.neutral_coordinates()
    before = np.asarray(model.markers(q, model.default_params(), marker_set="coco17"))
    after = np.asarray(jax.jit(model.markers, static_argnames="marker_set")(q, params, marker_set="coco17"))
    for name, shift in zip(model.marker_names("coco17"), np.linalg.norm(after - before, axis=1)):
        print(f"{name:>16s} moved {shift * 1000:6.1f} mm")

    out = Path(args.out)
    print("wrote", model.to_mjcf(params, out / "model.xml", total_mass=args.mass))
    print("wrote", osim.export(model, params, out / "model.osim"))


if __name__ == "__main__":
    main()
