"""Attaching an OpenSim ``MarkerSet`` to any body model by body name.

OpenSim's ScaleTool replaces a generic model's markers with those of a marker-set file
(``GenericModelMaker``'s ``marker_set_file``); a myo_sim model, whose bodies carry
gait2392/Rajagopal names and frames, takes the same files. Each marker becomes a site of the
named body at its ``location`` in that body's frame (a converted ``.osim`` body's frame is
OpenSim's), and the marker set ``opensim`` maps the marker names to those sites. A marker the
set already has moves; the others are added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from converters.opensim_setup import MarkerPlacement
from mjx_biomech.body.metadata import METADATA_NAME
from mjx_biomech.body.model import BiomechModel
from mjx_biomech.errors import InputError

__all__ = ["MARKER_SET", "attach_markers"]

# The marker set that attached markers join (a converted .osim keeps its own markers there).
MARKER_SET = "opensim"


def _plain(value):
    """Metadata (read-only mappings inside) as JSON-ready dicts and lists."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def attach_markers(model: BiomechModel, markers: Sequence[MarkerPlacement], source: str = "<markers>") -> BiomechModel:
    """``model`` with ``markers`` as sites on their bodies and in marker set :data:`MARKER_SET`.

    Args:
        model: a model with an ``MjSpec`` (loaded from a path, ``myo_sim:<name>`` or an ``MjSpec``).
        markers: the placements (``converters.opensim_setup.read_marker_set``).
        source: the marker-set file, for messages.

    Raises:
        InputError: naming ``source`` and the marker, for a body the model lacks, or a marker
            whose name is a site of the model that is not one of its markers.
    """
    if model.spec is None:
        raise InputError(f"{model.source}: a model loaded from a compiled MjModel keeps no MjSpec to add markers to; "
                         "load it from its file or 'myo_sim:<name>'")
    spec = model.spec.copy()
    bodies = {b.name: b for b in spec.bodies[1:]}
    current = dict(model.marker_sets.get(MARKER_SET, {}))
    sites = {s.name: s for s in spec.sites}
    for marker in markers:
        where = f"{source}: <Marker name={marker.name!r}>"
        body = bodies.get(marker.body)
        if body is None:
            raise InputError(f"{where}: body {marker.body!r} is not a body of {model.source} "
                             f"(bodies: {', '.join(sorted(bodies))})")
        site_name = current.get(marker.name, marker.name)
        if site_name in sites:
            if marker.name not in current:
                raise InputError(f"{where}: {model.source} has a site {marker.name!r} that is not a marker; "
                                 "rename the marker")
            spec.delete(sites.pop(site_name))
        site = body.add_site(name=site_name, pos=list(marker.location), size=[0.008, 0, 0], rgba=[1, 0.2, 0.2, 1])
        sites[site_name] = site
        current[marker.name] = site_name
    meta = _plain(dict(model.metadata))
    meta["marker_sets"] = dict(_plain(dict(model.marker_sets)), **{MARKER_SET: current})
    text = next((t for t in spec.texts if t.name == METADATA_NAME), None)
    if text is None:
        text = spec.add_text(name=METADATA_NAME)
    text.data = json.dumps(meta, separators=(",", ":"))
    try:
        compiled = spec.compile()
    except ValueError as e:
        raise InputError(f"{source}: MuJoCo could not compile {model.source} with the markers: {e}") from e
    return BiomechModel.from_mujoco(spec, compiled, model.source, meta)
