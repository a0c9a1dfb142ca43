"""What every converter agrees on about OpenSim: where its ground sits in the MuJoCo world, and
how numbers are written into its XML.

OpenSim's ground is Y-up (X forward, Y up, Z to the right); the MuJoCo world is Z-up (X forward,
Y to the left, Z up). A converted model hangs its whole tree under a frame turned +90° about X,
so OpenSim ground point ``(x, y, z)`` is world point ``(x, -z, y)`` and every OpenSim coordinate
keeps its value (DESIGN.md, "Conventions").
"""

from __future__ import annotations

import numpy as np

# OpenSim ground in the MuJoCo world, (w, x, y, z): turned +90 degrees about X.
GROUND_QUAT = (float(np.cos(np.pi / 4)), float(np.sin(np.pi / 4)), 0.0, 0.0)
# (3, 3) rotation taking OpenSim ground vectors to world vectors: p -> (p_x, -p_z, p_y).
GROUND_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
GROUND_TO_WORLD.flags.writeable = False


def y_up_to_z_up(points) -> np.ndarray:
    """(..., 3) points in OpenSim's Y-up frame -> MuJoCo's Z-up frame: (x, y, z) -> (x, -z, y)."""
    # Component by component rather than GROUND_TO_WORLD @ p, so a NaN stays in its own axis.
    points = np.asarray(points)
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


def z_up_to_y_up(points) -> np.ndarray:
    """(..., 3) points in MuJoCo's Z-up frame -> OpenSim's Y-up frame: (x, y, z) -> (x, z, -y)."""
    points = np.asarray(points)
    return np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1)


def xml_numbers(values) -> str:
    """Space-separated numbers for an XML attribute or element (MJCF or ``.osim``), each the
    shortest text that reads back to the same float64."""
    return " ".join(repr(float(v)) for v in np.ravel(values))
