"""Loading a :class:`BiomechModel` from a path, a MyoSuite name, an ``MjSpec`` or an ``MjModel``.

MJCF is read here. Other formats come from loaders that other packages register under the
``mjx_biomech.model_loaders`` entry-point group (name: the file suffix without its dot, value:
a function ``path -> mujoco.MjSpec``); the ``converters`` package registers ``osim``. So the
core reads ``.osim`` files without importing the converters.

MuJoCo's C warnings become Python warnings (:class:`MuJoCoWarning`) from the moment this module
is imported, unless a handler was set before: MuJoCo's own handler prints them and appends them
to ``MUJOCO_LOG.TXT`` in the working directory.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import mujoco

from mjx_biomech.body.metadata import METADATA_NAME, read_metadata
from mjx_biomech.body.model import BiomechModel
from mjx_biomech.errors import InputError

LOADER_GROUP = "mjx_biomech.model_loaders"


class MuJoCoWarning(UserWarning):
    """A warning from MuJoCo's C library."""


def _forward_mujoco_warning(message: str) -> None:
    try:
        warnings.warn(f"MuJoCo: {message.strip()}", MuJoCoWarning, stacklevel=2)
    except Exception:  # noqa: BLE001
        # Under a filter that turns warnings into errors: an exception cannot cross MuJoCo's C code
        # (the process would abort), so the warning is printed instead.
        print(f"MuJoCo warning: {message.strip()}", file=sys.stderr)


if mujoco.get_mju_user_warning() is None:
    mujoco.set_mju_user_warning(_forward_mujoco_warning)


def bundled_model_path() -> Path:
    """The bundled full-body model's MJCF, shipped as package data."""
    return Path(str(resources.files("mjx_biomech") / "data" / "fullbody.xml"))


def _loader(suffix: str) -> Callable[[Path], mujoco.MjSpec] | None:
    for entry in importlib_metadata.entry_points(group=LOADER_GROUP):
        if entry.name == suffix:
            return entry.load()
    return None


def _compile(spec: mujoco.MjSpec, source: str) -> mujoco.MjModel:
    try:
        return spec.compile()
    except (ValueError, RuntimeError) as e:
        raise InputError(f"{source}: MuJoCo could not compile the model: {e}") from e


def _metadata(source_model: mujoco.MjSpec | mujoco.MjModel, source: str) -> dict | None:
    try:
        return read_metadata(source_model)
    except json.JSONDecodeError as e:
        raise InputError(f"{source}: <custom><text name={METADATA_NAME!r}> is not valid JSON: {e}") from e


def _from_spec(spec: mujoco.MjSpec, source: str) -> BiomechModel:
    return BiomechModel.from_mujoco(spec, _compile(spec, source), source, _metadata(spec, source))


def _from_myo_sim(source: str) -> BiomechModel:
    name = source.split(":", 1)[1]
    try:
        import myo_sim
    except ImportError as e:
        raise InputError(f"{source}: the myo-sim package is not installed (pip install myo-sim)") from e
    try:
        # myo_sim attaches specs with an empty prefix, about which MuJoCo warns; the unnamed
        # default classes that leaves are named when the model is written (static_model).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = myo_sim.load_spec(name)
    except Exception as e:
        raise InputError(f"{source}: myo_sim has no model {name!r} ({e})") from e
    # A copy does not carry the attachment warning, which compiling the original repeats.
    return _from_spec(spec.copy(), source)


def _from_path(path: Path) -> BiomechModel:
    try:
        found, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a usable model path ({e})") from None
    if not found:
        raise InputError(f"{path}: model file not found")
    if not is_file:
        raise InputError(f"{path}: not a file")
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("xml", "mjcf"):
        loader = _loader(suffix)
        if loader is not None:
            return _from_spec(loader(path), str(path))
        if suffix == "osim":
            raise InputError(f"{path}: no loader for .osim files is registered; install mjx-biomech with its converters")
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except ValueError as e:
        raise InputError(f"{path}: not a valid MJCF model: {e}") from e
    return _from_spec(spec, str(path))


def load_model(source: Any = None) -> BiomechModel:
    """Load a body model.

    Args:
        source: ``None`` for the bundled full-body model; a path to an MJCF (``.xml``) or an
            OpenSim model (``.osim``, converted on the fly by the registered loader);
            ``"myo_sim:<name>"`` for a MyoSuite model from the ``myo-sim`` package (e.g.
            ``"myo_sim:myolegs"``); or a ``mujoco.MjSpec`` / ``mujoco.MjModel``.
    """
    if source is None:
        return _from_path(bundled_model_path())
    if isinstance(source, mujoco.MjSpec):
        return _from_spec(source.copy(), "<MjSpec>")
    if isinstance(source, mujoco.MjModel):
        return BiomechModel.from_mujoco(None, source, "<MjModel>", _metadata(source, "<MjModel>"))
    if isinstance(source, str) and source.startswith("myo_sim:"):
        return _from_myo_sim(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source))
    raise InputError(
        f"load_model: source must be None, a path, 'myo_sim:<name>', an MjSpec or an MjModel, not {type(source).__name__}"
    )
