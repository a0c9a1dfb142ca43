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


# Subcommands that compile JAX programs: they can keep them in JAX's persistent compilation cache
# (--compile-cache, --cache-dir), each a new process that compiles a few hundred programs at most.
_COMPILING = ("demo", "fit", "ik", "scale", "batch", "train", "evaluate")
# ... and those that do by default. Not batch: its subjects run one after another in one process
# (--sequential) or in reused Ray workers, and with jax 0.9.2 on CPU a process that had compiled
# and cached the programs of some thirty fits aborted writing the next one to the cache
# (benchmarks/cli_cache.py's docstring has the measurements).
_CACHING_BY_DEFAULT = ("demo", "fit", "ik", "scale", "train", "evaluate")

# The compiling subcommands' default: "0" (false, no, off) turns the cache off, "1" (true, yes,
# on) on, where no --compile-cache, --no-compile-cache or --cache-dir says (tests/conftest.py: 0).
COMPILE_CACHE_ENV = "MJX_BIOMECH_COMPILE_CACHE"

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


def compile_cache_wanted(cache_dir: str | os.PathLike | None = None, compile_cache: bool | None = None,
                         default: bool = True) -> bool:
    """Whether a compiling subcommand keeps its programs in JAX's persistent compilation cache:
    ``compile_cache`` (``--compile-cache`` / ``--no-compile-cache``) when given; else on with a
    ``cache_dir`` (``--cache-dir``); else ``$MJX_BIOMECH_COMPILE_CACHE`` (``0``, ``false``, ``no``,
    ``off`` or ``1``, ``true``, ``yes``, ``on``) when set; else ``default``."""
    if compile_cache is not None:
        return compile_cache
    if cache_dir:
        return True
    setting = os.environ.get(COMPILE_CACHE_ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    return default


def _add_cache_arguments(parser: argparse.ArgumentParser, default: bool) -> None:
    # SUPPRESS: no attribute unless given, and no "(default: None)" from fit's defaults formatter.
    parser.add_argument("--cache-dir", default=argparse.SUPPRESS, metavar="DIR",
                        help=f"folder of the compilation cache (default: {default_cache_dir()}; "
                             "$MJX_BIOMECH_CACHE_DIR sets it; implies --compile-cache)")
    default_text = (f"on; --no-compile-cache or ${COMPILE_CACHE_ENV}=0 turns it off" if default else
                    "off: --sequential fits every subject in this process and Ray reuses its workers; "
                    "when on, the workers use it too")
    parser.add_argument("--compile-cache", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                        help="keep compiled programs in JAX's persistent compilation cache, so a second run on data "
                             f"of the same shapes skips compiling (default: {default_text})")


def enable_compilation_cache(folder: str | os.PathLike | None = None, enabled: bool = True) -> None:
    """Turn JAX's persistent compilation cache on in ``folder`` (default :func:`default_cache_dir`,
    unless the user already chose one with ``JAX_COMPILATION_CACHE_DIR``), for every program
    (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` chooses otherwise: a fit compiles hundreds of
    small programs, which together take longer to compile than to load). ``enabled=False`` turns
    JAX's cache off. The process's first compilation fixes the folder: call this before it."""
    import jax

    from mjx_biomech import program_cache

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        program_cache.enable(None)
        return
    if folder is not None or jax.config.jax_compilation_cache_dir is None:
        folder = folder or default_cache_dir()
        jax.config.update("jax_compilation_cache_dir", str(folder))
    else:
        folder = jax.config.jax_compilation_cache_dir
    # Beside the compiled programs, the traced ones (mjx_biomech.program_cache), so that a second
    # run skips tracing its largest programs too.
    program_cache.enable(Path(folder) / "programs")
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _quiet_cpu_cache_loads()


def _quiet_cpu_cache_loads() -> None:
    """XLA:CPU (jaxlib 0.9.2 here) logs two ERROR lines of some 2,000 characters for every program
    it loads from the cache, on CPUs whose LLVM tuning flags (+prefer-no-gather, +prefer-no-scatter)
    its machine check takes for features the host lacks (jax-ml/jax#38445), and then runs the
    loaded program all the same. JAX's cache key holds the CPU's name and features, so a program
    compiled on another CPU is never loaded. Where JAX runs on the CPU only and
    ``TF_CPP_MIN_LOG_LEVEL`` is at JAX's default (1, set when jax is imported), XLA's C++ log
    keeps its fatal messages only."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") != "1" or _accelerator_plugin_installed():
        return
    try:
        from jax._src.lib import utils

        utils.absl_set_min_log_level(3)
    except (ImportError, AttributeError):  # a jaxlib without it logs as it does
        pass


def _accelerator_plugin_installed() -> bool:
    """Whether JAX may run on something other than the CPU: ``JAX_PLATFORMS`` names another
    platform first, or a GPU/TPU plugin is installed (found without starting a backend, which on
    a GPU would take its memory)."""
    import importlib.metadata
    import importlib.util
    import pkgutil

    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    if importlib.metadata.entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu") is not None:
        return True
    try:
        import jax_plugins
    except ImportError:
        return False
    return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


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
                _add_cache_arguments(parsers[chosen], chosen in _CACHING_BY_DEFAULT)
        args = parser.parse_args(argv)
        if chosen in _COMPILING:
            cache_dir, compile_cache = getattr(args, "cache_dir", None), getattr(args, "compile_cache", None)
            if compile_cache_wanted(cache_dir, compile_cache, chosen in _CACHING_BY_DEFAULT):
                enable_compilation_cache(cache_dir)
            elif compile_cache is False:
                enable_compilation_cache(enabled=False)
        return int(args._run(args) or 0)
    except InputError as e:
        return _fail(chosen, str(e))
    except OSError as e:
        return _fail(chosen, f"{e.filename}: {e.strerror}" if e.filename else str(e))
    except ImportError as e:
        if not _optional_package_missing(e):
            raise
        return _fail(chosen, f"needs the optional package {e.name!r}, which is not installed")
