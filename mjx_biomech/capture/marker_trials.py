"""3D marker trials as arrays: what optical motion capture (.trc) or triangulation gives a fit.

The core never reads files: ``converters.opensim_setup.read_marker_trial`` builds a
:class:`MarkerTrial` from a .trc file, already in metres and in MuJoCo's Z-up world.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mjx_biomech.errors import InputError


@dataclasses.dataclass(frozen=True)
class MarkerTrial:
    """One trial of 3D marker positions.

    Attributes:
        name: the trial's name (a .trc file's stem), used to name outputs.
        times: (T,) seconds, strictly increasing.
        marker_names: (M,) marker labels, unique.
        positions: (T, M, 3) metres, MuJoCo world frame (Z up); NaN where a marker is missing.
        source: where the data came from (a file path), for error messages.
    """

    name: str
    times: np.ndarray
    marker_names: tuple[str, ...]
    positions: np.ndarray
    source: str = "<arrays>"

    def __post_init__(self):
        times = np.array(self.times, dtype=np.float64)
        positions = np.array(self.positions, dtype=np.float64)
        names = tuple(str(n) for n in self.marker_names)
        where = f"{self.source}: marker trial {self.name!r}"
        if times.ndim != 1 or times.size == 0:
            raise InputError(f"{where}: times has shape {times.shape}; expected (T,) with T >= 1")
        if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise InputError(f"{where}: times must be finite and strictly increase")
        if positions.shape != (times.size, len(names), 3):
            raise InputError(f"{where}: positions has shape {positions.shape}; expected (T, M, 3) = "
                             f"({times.size}, {len(names)}, 3)")
        if len(set(names)) != len(names):
            raise InputError(f"{where}: duplicate marker names {sorted({n for n in names if names.count(n) > 1})}")
        # A marker with any coordinate missing is missing as a whole, as OpenSim reads it.
        positions[~np.all(np.isfinite(positions), axis=-1)] = np.nan
        for array in (times, positions):
            array.flags.writeable = False
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "marker_names", names)

    @property
    def num_frames(self) -> int:
        return int(self.times.size)

    def select(self, names: Sequence[str]) -> np.ndarray:
        """(T, len(names), 3) positions of ``names`` in that order; NaN for a name the trial lacks."""
        out = np.full((self.num_frames, len(names), 3), np.nan)
        index = {n: i for i, n in enumerate(self.marker_names)}
        for k, name in enumerate(names):
            if name in index:
                out[:, k] = self.positions[:, index[name]]
        return out

    def window(self, start: float = -np.inf, end: float = np.inf) -> MarkerTrial:
        """The frames from the one nearest ``start`` to the one nearest ``end`` (s), both included,
        as OpenSim's tools pick them (a bound beyond the data is the first or last frame)."""
        first = self._nearest(max(start, self.times[0]))
        last = self._nearest(min(end, self.times[-1]))
        if last < first:
            raise InputError(f"{self.source}: time range [{start}, {end}] s holds no frame of trial {self.name!r} "
                             f"({self.times[0]}–{self.times[-1]} s)")
        return dataclasses.replace(self, times=self.times[first : last + 1], positions=self.positions[first : last + 1])

    def _nearest(self, t: float) -> int:
        return int(np.argmin(np.abs(self.times - t)))
