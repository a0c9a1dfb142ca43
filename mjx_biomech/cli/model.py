"""``mjx-biomech model info|scale``: inspect a body model or write a person's scaled copy."""

from __future__ import annotations

import argparse
import math

import numpy as np
from rich.console import Console
from rich.table import Table

from mjx_biomech.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="coordinates with ranges, scale groups, marker sets and mass")
    info.add_argument("model", nargs="?", default=None, help="bundled model (default), a .xml/.osim path, or myo_sim:<name>")
    scale = sub.add_parser("scale", help="write a statically scaled MJCF for one person")
    scale.add_argument("model", nargs="?", default=None, help="bundled model (default), a .xml/.osim path, or myo_sim:<name>")
    scale.add_argument("--height", type=float, help="standing height in metres (sets the overall scale)")
    scale.add_argument("--mass", type=float, help="total mass in kg (masses and inertias follow)")
    scale.add_argument("--scale", action="append", default=[], metavar="GROUP=S", help="a scale parameter, e.g. thigh_r=1.05 (repeatable)")
    scale.add_argument("--out", required=True, help="output MJCF path")


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _load(source):
    from mjx_biomech import load_model

    return load_model(source)


def _info(model) -> None:
    console = Console()
    console.print(repr(model))
    table = Table(title="coordinates")
    for col in ("name", "motion", "min", "max", "default"):
        table.add_column(col)
    for c in model.coordinates:
        unit = (lambda v: f"{math.degrees(v):.1f}°") if c.motion == "rotational" else (lambda v: f"{v:.3f} m")
        table.add_row(c.name, c.motion, unit(c.range[0]), unit(c.range[1]), unit(c.default) + (" (locked)" if c.locked else ""))
    console.print(table)
    groups = Table(title="scale groups")
    groups.add_column("group")
    groups.add_column("bodies")
    groups.add_column("per axis")
    for g in model.scale_groups:
        groups.add_row(g.name, ", ".join(g.bodies) if len(g.bodies) < 8 else f"{len(g.bodies)} bodies", str(g.per_axis))
    console.print(groups)
    sets = Table(title="marker sets")
    sets.add_column("set")
    sets.add_column("keypoints")
    for name, table_ in model.marker_sets.items():
        sets.add_row(name, str(len(table_)))
    console.print(sets)
    console.print(f"total mass: {model.total_mass():.3f} kg; standing height: {model.standing_height():.3f} m")


def _scale(model, args) -> None:
    values: dict[str, float] = {}
    if args.height is not None:
        values["overall"] = args.height / model.standing_height()
    for item in args.scale:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--scale {item!r}: expected GROUP=VALUE, e.g. thigh_r=1.05")
        try:
            factor = float(value)
        except ValueError as e:
            raise InputError(f"--scale {item!r}: {value!r} is not a number") from e
        if not _positive(factor):
            raise InputError(f"--scale {item!r}: the scale must be a positive number")
        values[name] = values.get(name, 1.0) * factor
    try:
        params = model.scale_params(**values)
    except InputError as e:
        raise InputError(f"--scale: {e}") from e
    path = model.to_mjcf(params, args.out, total_mass=args.mass)
    scaled = model.to_mujoco(params, total_mass=args.mass)
    console = Console()
    for name, value in values.items():
        console.print(f"{name}: x{value:.4f}")
    console.print(f"total mass {float(np.sum(scaled.body_mass)):.3f} kg -> wrote {path}")


def run(args) -> int:
    """Print the model's tables or write the scaled MJCF; bad input raises :class:`InputError`."""
    if args.action == "scale":
        for flag, value, unit in (("--height", args.height, "metres"), ("--mass", args.mass, "kg")):
            if value is not None and not _positive(value):
                raise InputError(f"{flag} {value}: must be positive ({unit})")
    model = _load(args.model)
    if args.action == "info":
        _info(model)
    else:
        _scale(model, args)
    return 0
