"""The ``mjx-biomech`` command line.

Each subcommand lives in the module that implements it; a module provides
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when its subcommand
runs, so ``mjx-biomech model info`` does not pay for brax or OpenSim.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mjx_biomech.errors import InputError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "model": ("mjx_biomech.cli.model", "inspect or scale a body model"),
    "validate": ("converters.validate", "compare a converted .osim model with OpenSim at random poses"),
    "demo": ("mjx_biomech.cli.demo", "fit a synthetic 8-camera capture of the bundled model and write every output"),
    "fit": ("mjx_biomech.cli.fit", "fit a scaled model to multi-camera 2D keypoints"),
    "train": ("env_registry.train", "train a gait-imitation policy with brax PPO"),
    "evaluate": ("env_registry.evaluate", "evaluate a trained gait-imitation policy"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mjx-biomech", description="Scalable, differentiable body models for OpenSim and MuJoCo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                parser.exit(2, f"mjx-biomech {name}: needs an optional package that is not installed ({e})\n")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InputError as e:
        # Bad input is the user's to fix: one line naming the file or argument, no traceback.
        print(f"mjx-biomech {chosen}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
