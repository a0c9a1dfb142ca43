"""Per-person parameters of a body model."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jax import Array


class BodyParams(eqx.Module):
    """Segment scales and marker offsets of one person.

    Attributes:
        scales: (P,) positive scale factors, one per scale parameter of the model
            (``model.scale_param_names``); 1 is the unscaled model.
        offsets: (S, 3) metres, added to every site's position in its body's frame after
            scaling (``model.site_names`` order); 0 is the model's own marker placement.
    """

    scales: Array
    offsets: Array

    def replace(self, **changes) -> "BodyParams":
        """A copy with the named fields changed, e.g. ``params.replace(scales=s)``."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def identity(num_scales: int, num_sites: int, dtype=None) -> "BodyParams":
        return BodyParams(jnp.ones((num_scales,), dtype), jnp.zeros((num_sites, 3), dtype))
