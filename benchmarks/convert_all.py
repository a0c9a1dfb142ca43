"""Convert every OpenSim model in a folder and check each against OpenSim 4.6.

``python benchmarks/convert_all.py [FOLDER] [--poses N]`` (default: the shared opensim-models).
Prints one line per ``.osim`` (its worst marker/body distance to OpenSim, or why it was refused)
and last ``converted=K/N worst_error_m=E``. Warnings (missing meshes, ...) are not shown.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "opensim-models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--poses", type=int, default=20, help="random poses per model (default 20)")
    args = parser.parse_args(argv)

    from converters import validate
    from mjx_biomech.errors import InputError

    paths = sorted(Path(args.folder).rglob("*.osim"))
    converted, worst = 0, 0.0
    for path in paths:
        name = path.relative_to(args.folder)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                error = validate.validate(path, poses=args.poses, seed=0)["max_error_m"]
        except InputError as e:
            print(f"refused   {name}: {e}")
            continue
        converted += 1
        worst = max(worst, error)
        print(f"{error:.3e} {name}")
    print(f"converted={converted}/{len(paths)} worst_error_m={worst:.3e}")
    return 0 if converted == len(paths) and worst <= validate.TOLERANCE_M else 1


if __name__ == "__main__":
    raise SystemExit(main())
