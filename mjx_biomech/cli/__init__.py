"""The ``mjx-biomech`` command line.

Each subcommand lives in the module that implements it; a module provides
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when its subcommand
runs, so ``mjx-biomech model info`` does not pay for brax or OpenSim.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from mjx_biomech.errors import InputError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "model": ("mjx_biomech.cli.model", "inspect or scale a body model"),
    "validate": ("converters.validate", "compare a converted .osim model with OpenSim at random poses"),
    "demo": ("mjx_biomech.cli.demo", "fit a synthetic 8-camera capture of the bundled model and write every output"),
    "fit": ("mjx_biomech.cli.fit", "fit a scaled model to multi-camera 2D keypoints"),
    "ik": ("mjx_biomech.cli.ik", "inverse kinematics from .trc markers, a drop-in for OpenSim's InverseKinematicsTool"),
    "scale": ("mjx_biomech.cli.scale", "scale a model to .trc markers (static and motion trials), a drop-in for OpenSim's ScaleTool"),
    "batch": ("mjx_biomech.cli.batch", "fit every subject of a study file (markerless and marker-based), each as a Ray task"),
    "train": ("env_registry.train", "train a gait-imitation policy with brax PPO"),
    "evaluate": ("env_registry.evaluate", "evaluate a trained gait-imitation policy"),
}


# Subcommands that compile JAX programs: they keep them in JAX's persistent compilation cache.
_COMPILING = ("demo", "fit", "ik", "scale", "batch", "train", "evaluate")

# An import error naming one of these is a bug of this project, not a missing optional package.
_OWN_PACKAGES = ("mjx_biomech", "converters", "env_registry")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors take the CLI's one-line error format."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _optional_package_missing(e: ImportError) -> bool:
    """Whether ``e`` says that a package from outside this project is not installed."""
    return isinstance(e, ModuleNotFoundError) and bool(e.name) and e.name.split(".")[0] not in _OWN_PACKAGES


def default_cache_dir() -> Path:
    """``$MJX_BIOMECH_CACHE_DIR``, else ``mjx_biomech/jax`` in the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get("MJX_BIOMECH_CACHE_DIR"):
        return Path(os.environ["MJX_BIOMECH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mjx_biomech" / "jax"


def _add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="keep compiled programs in JAX's persistent compilation cache in DIR, so a second "
                             f"run skips compiling (implies --compile-cache; default folder {default_cache_dir()})")
    parser.add_argument("--compile-cache", action=argparse.BooleanOptionalAction, default=None,
                        help="JAX's persistent compilation cache (default: off, unless --cache-dir or "
                             "$MJX_BIOMECH_CACHE_DIR is given: writing some programs to it has aborted the process "
                             "with jax 0.9.2 on CPU)")


def enable_compilation_cache(folder: str | os.PathLike | None = None, enabled: bool = True) -> None:
    """Turn JAX's persistent compilation cache on in ``folder`` (default :func:`default_cache_dir`),
    unless ``enabled`` is False or the user already chose one (``JAX_COMPILATION_CACHE_DIR``)."""
    import jax

    if not enabled:
        return
    if folder is not None or jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(folder or default_cache_dir()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _fail(command: str, message: str) -> int:
    """Print ``message`` as the one error line of ``command`` on stderr; return the exit status 2."""
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"mjx-biomech {command}: error: {line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit status.

    Bad input (an :class:`InputError`, an unreadable or unwritable file, a missing optional
    package) is the user's to fix: one line ``mjx-biomech <command>: error: <message>`` on
    stderr, no traceback, status 2. argparse's usage errors exit with 2 in the same format.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="mjx-biomech", description="Scalable, differentiable body models for OpenSim and MuJoCo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {name: sub.add_parser(name, help=text, description=text) for name, (_, text) in SUBCOMMANDS.items()}
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    try:
        # Without a known command, parse_args reports the usage error (or prints --help) and exits.
        if chosen is not None:
            mod = importlib.import_module(SUBCOMMANDS[chosen][0])
            mod.add_arguments(parsers[chosen])
            parsers[chosen].set_defaults(_run=mod.run)
            if chosen in _COMPILING:
                _add_cache_arguments(parsers[chosen])
        args = parser.parse_args(argv)
        if chosen in _COMPILING:
            wanted = args.compile_cache
            if wanted is None:
                wanted = bool(args.cache_dir or os.environ.get("MJX_BIOMECH_CACHE_DIR"))
            enable_compilation_cache(args.cache_dir, wanted)
        return int(args._run(args) or 0)
    except InputError as e:
        return _fail(chosen, str(e))
    except OSError as e:
        return _fail(chosen, f"{e.filename}: {e.strerror}" if e.filename else str(e))
    except ImportError as e:
        if not _optional_package_missing(e):
            raise
        return _fail(chosen, f"needs the optional package {e.name!r}, which is not installed")
