"""Checkpoints of an AdamW fit: its state saved to a folder, and a fit resumed from it.

A folder holds ``checkpoint.eqx`` (the state's arrays, equinox serialisation) and
``checkpoint.json`` (the fingerprint of the fit's data and settings). Both are written
atomically; a checkpoint whose fingerprint differs from the resuming fit's is refused, so two
fits are never silently mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx

from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic

_STATE = "checkpoint.eqx"
_META = "checkpoint.json"


def fingerprint(**settings) -> str:
    """The fingerprint of a fit: its ``settings`` (anything ``str`` can write) as sorted JSON."""
    return json.dumps(settings, sort_keys=True, default=str)


def save(folder: Path, state, meta: str) -> None:
    """Write ``state`` (a pytree) and the fingerprint ``meta`` to ``folder``."""
    with atomic_write(folder / _STATE, "wb") as f:
        eqx.tree_serialise_leaves(f, state)
    write_text_atomic(folder / _META, meta)


def load(folder: Path, like, meta: str):
    """The state saved in ``folder``, shaped like ``like``, or None if there is none.

    Raises:
        InputError: the checkpoint there belongs to a fit with another fingerprint than ``meta``.
    """
    path = folder / _STATE
    if not path.exists():
        return None
    stored = (folder / _META).read_text() if (folder / _META).exists() else ""
    if stored != meta:
        raise InputError(
            f"{path}: the checkpoint belongs to a fit with other data or settings; "
            "use another checkpoint_dir or delete it to start afresh"
        )
    return eqx.tree_deserialise_leaves(path, like)
