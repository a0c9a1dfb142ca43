"""Write a scaled OpenSim model: scale the ``.osim`` a model came from, or build one.

A model that did not come from ``.osim`` (the bundled model, any MJCF) is built from its
MuJoCo joints by :mod:`converters.osim_build`. For one converted from ``.osim``, the original
``.osim`` (named, with its hash, in the metadata's ``opensim`` section) is scaled with the core's
per-body scale vectors:

- For a model with muscles or per-axis scales, with OpenSim's Python package installed
  (``pip install mjx-biomech[opensim]``) and a source OpenSim loads, by OpenSim's own ``Model.scale`` (what ScaleTool runs): offset frames, markers, geometry, mass centres,
  masses and inertias (OpenSim's rule, its cylinder approximation for unequal factors), joint
  translation functions, wrap objects, muscle path points, and muscles' optimal fiber and tendon
  slack lengths in proportion to their path lengths at the default pose. Scales may differ per
  axis.
- Otherwise (a warning says why when OpenSim refuses the source), by editing the XML the way ScaleTool scales a model: offset-frame translations,
  marker locations, geometry scale factors and mass centres by the scale of the body they are
  fixed in; masses by s³ and inertias by s⁵; every translation axis that the converter made a
  dependent joint multiplied (MultiplierFunction) by its parent body's scale. Scales must be
  isotropic per body, and muscles are left as they are (a warning says so): their paths and
  lengths need OpenSim's path geometry. Plain XML editing keeps every other element as it was;
  an OpenSim 3 source is written in the OpenSim 4 form OpenSim upgrades it to.

Either way each marker is written where the core puts its site: its location scaled along its
body's axes plus its offset (``params.offsets``, metres in the body frame). (For a marker on an
offset frame rotated in its body, ScaleTool would scale the location along the frame's axes: with
per-axis scales the written location differs from ScaleTool's there.) Where a joint's child
frame is rotated in the child body, both scale the frame's translation along the body's axes
(the core's rule for a body in its joint-frame body, :mod:`mjx_biomech.body.scaling`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from converters import osim_build
from converters.opensim_frame import xml_numbers
from converters.osim_parse import read_document, read_osim
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write


def _set(el: ET.Element, tag: str, values) -> None:
    child = el.find(tag)
    if child is None:
        child = ET.SubElement(el, tag)
    child.text = xml_numbers(values)


def _floats(el: ET.Element, tag: str, default: str) -> np.ndarray:
    child = el.find(tag)
    text = child.text if child is not None and child.text and child.text.strip() else default
    return np.array([float(v) for v in text.split()])


def _components(el: ET.Element, path: str):
    """(path, element) of every PhysicalOffsetFrame owned by component ``el`` at ``path``, recursively."""
    for holder in ("frames", "components"):
        container = el.find(holder)
        if container is None:
            continue
        for child in container:
            if child.tag == "PhysicalOffsetFrame":
                child_path = f"{path}/{child.get('name')}"
                yield child_path, child
                yield from _components(child, child_path)


def _children(el: ET.Element | None, path: str) -> list[ET.Element]:
    found = el.find(path) if el is not None else None
    return list(found) if found is not None else []


def _source(model) -> Path:
    section = model.metadata["opensim"]
    source = Path(section["source"])
    if not source.is_file():
        raise InputError(f"{source}: the .osim this model was converted from is missing "
                         "(converters.osim_build.export builds one from the MuJoCo model instead)")
    if hashlib.sha256(source.read_bytes()).hexdigest() != section.get("sha256"):
        raise InputError(f"{source}: the .osim changed after the model was converted from it; convert it again")
    return source


def _opensim():
    """OpenSim's Python package, or None where it is not installed."""
    try:
        import opensim
    except ImportError:
        return None
    return opensim


def export(model, params, path: str | Path, engine: str = "auto") -> Path:
    """Write ``model`` scaled by ``params`` (a ``BodyParams``) to ``path`` as an OpenSim 4 model.

    A ``BiomechModel`` loaded from an ``.osim`` (or from its converted MJCF) is written by scaling
    that ``.osim`` (see the module's docstring); any other model is built by
    :func:`converters.osim_build.export`.

    Args:
        engine: for a model converted from ``.osim``: ``"opensim"`` (OpenSim's ``Model.scale``),
            ``"xml"`` (XML editing: isotropic scales, muscles unscaled) or ``"auto"`` (OpenSim's
            when its package is installed and the model has muscles or per-axis scales, XML
            editing otherwise).

    Raises:
        InputError: an unknown ``engine``; ``"opensim"`` without the package; per-axis scales
            with ``"xml"``; a source ``.osim`` missing or changed since conversion.
    """
    if engine not in ("auto", "opensim", "xml"):
        raise InputError(f"export: engine {engine!r} is not one of 'auto', 'opensim', 'xml'")
    if "source" not in (model.metadata.get("opensim") or {}):
        return osim_build.export(model, params, path)
    source = _source(model)
    parsed = read_osim(source)
    document = read_document(source)  # the source's XML, read once: checked, scaled or edited below
    with jax.enable_x64(True):
        body_scales = np.asarray(model.body_scales(jnp.asarray(params.scales, jnp.float64)))
        offsets = np.asarray(params.offsets, dtype=np.float64)
    mj_model = model.mj_model
    if engine == "auto" and not (_has_muscles(document) or _per_axis(parsed, mj_model, body_scales)):
        engine = "xml"  # nothing OpenSim's own scaling would add (see _translation_multipliers)
    opensim = _opensim() if engine != "xml" else None
    if engine == "opensim" and opensim is None:
        raise InputError("export: engine='opensim' needs OpenSim's Python package (pip install mjx-biomech[opensim])")
    if opensim is not None:
        try:
            tree = _scaled_by_opensim(opensim, source, parsed, mj_model, body_scales)
        except InputError as error:
            if engine == "opensim":
                raise
            # A model the converter reads but OpenSim refuses (e.g. collinear CustomJoint axes).
            warnings.warn(f"{error}; the .osim is written by XML editing instead", stacklevel=2)
            tree = None
        if tree is not None:
            _translation_multipliers(document, parsed, tree.getroot().find("Model"), mj_model, body_scales)
            _offset_markers(model, parsed, tree.getroot().find("Model"), mj_model, body_scales, offsets)
            with atomic_write(path) as f:
                tree.write(f, encoding="unicode", xml_declaration=True)
            return Path(path)

    def scale(base: str) -> float:
        if base == "/ground":
            return 1.0
        s = body_scales[mj_model.body(parsed.body_name(base)).id]
        if not np.all(s == s[0]):
            raise InputError(f"export: body {parsed.body_name(base)!r} has per-axis scales {s.tolist()}; "
                             "only isotropic body scales can be written to .osim")
        return float(s[0])

    tree = ET.ElementTree(document)
    root = tree.getroot().find("Model")
    owners = [("/ground", root.find("Ground"))]
    owners += [(f"/bodyset/{b.get('name')}", b) for b in _children(root, "BodySet/objects")]
    owners += [(f"/jointset/{j.get('name')}", j) for j in _children(root, "JointSet/objects")]
    top = root.find("components")
    if top is not None:
        owners += [(f"/{c.get('name')}", c) for c in top if c.tag == "PhysicalOffsetFrame"]
    for owner_path, owner in list(owners):
        if owner is not None:
            owners.extend(_components(owner, owner_path))
    for frame_path, el in owners:
        if el is None or el.tag not in ("Ground", "Body", "PhysicalOffsetFrame"):
            continue
        s = scale(parsed.frame_in_base(frame_path)[0])
        if el.tag == "PhysicalOffsetFrame":
            _set(el, "translation", s * _floats(el, "translation", "0 0 0"))
        for geometry in _children(el, "attached_geometry"):
            _set(geometry, "scale_factors", s * _floats(geometry, "scale_factors", "1 1 1"))
        if el.tag == "Body":
            _set(el, "mass", s**3 * _floats(el, "mass", "nan"))
            _set(el, "mass_center", s * _floats(el, "mass_center", "0 0 0"))
            _set(el, "inertia", s**5 * _floats(el, "inertia", "0 0 0 0 0 0"))

    _offset_markers(model, parsed, root, mj_model, body_scales, offsets)
    muscles = [el.get("name") for el in root.iter() if el.tag.endswith("Muscle") and el.get("name")]
    if muscles:
        warnings.warn(f"{source}: {len(muscles)} muscles (e.g. {muscles[0]!r}) written unscaled: scaling their paths "
                      "and fiber and tendon lengths needs OpenSim's Python package (pip install mjx-biomech[opensim])",
                      stacklevel=2)

    dependent = {d["joint"] for d in model.metadata["dependent_joints"] if d["motion"] == "translational"}
    for joint in parsed.joints:
        if joint.type != "CustomJoint":
            continue
        s = scale(parsed.frame_in_base(joint.parent_frame)[0])
        el = root.find(f"JointSet/objects/CustomJoint[@name='{joint.name}']")
        for axis in el.find("SpatialTransform"):
            if f"{joint.name}_{axis.get('name')}" not in dependent or s == 1.0:
                continue
            fn = next(c for c in axis if c.tag not in ("coordinates", "axis"))
            if fn.tag == "function":  # the older form: the function inside a <function> element
                axis, fn = fn, fn[0]
            wrapper = ET.Element("MultiplierFunction", name="function")
            axis.remove(fn)
            fn.attrib.pop("name", None)
            ET.SubElement(wrapper, "function").append(fn)
            ET.SubElement(wrapper, "scale").text = repr(s)
            axis.append(wrapper)

    with atomic_write(path) as f:
        tree.write(f, encoding="unicode", xml_declaration=True)
    return Path(path)


def _offset_markers(model, parsed, root: ET.Element, mj_model, body_scales, offsets) -> None:
    """Every marker of the source where the core puts its site: ``s ⊙ (t + R p)`` plus the site's
    offset, in the body the marker's frame (``R``, ``t`` in the body) is fixed in, written in that
    frame as it lies once scaled (:func:`_scaled_origin`). For a marker on a body or an unrotated
    frame this is ``s ⊙ p`` plus the offset, what ScaleTool writes; on a rotated frame ScaleTool
    scales ``p`` along the frame's axes, which with per-axis scales puts the marker elsewhere."""
    site_index = {name: i for i, name in enumerate(model.site_names)}
    markers = {m.name: m for m in parsed.markers}
    for el in _children(root, "MarkerSet/objects"):
        marker = markers[el.get("name")]
        base, x = parsed.frame_in_base(marker.frame)
        s = np.ones(3) if base == "/ground" else body_scales[mj_model.body(parsed.body_name(base)).id]
        site = model.metadata["marker_sets"]["opensim"][marker.name]
        rotation = x[:3, :3]
        in_body = s * (x[:3, 3] + rotation @ np.asarray(marker.location)) + offsets[site_index[site]]
        _set(el, "location", rotation.T @ (in_body - _scaled_origin(parsed, marker.frame, s)))


def _scaled_origin(parsed, path: str, s: np.ndarray) -> np.ndarray:
    """The origin of frame ``path`` in its base body once every offset frame's translation is
    multiplied by the body's scales ``s`` along its parent frame's axes (as both engines do)."""
    origin = np.zeros(3)
    for _ in range(len(parsed.frames)):
        parent, x = parsed.frames[path]
        if parent is None:
            break
        origin = x[:3, :3] @ origin + s * x[:3, 3]
        path = parent
    return origin


@contextlib.contextmanager
def _quiet(opensim):
    """OpenSim's log at errors only (no missing-mesh warnings), restored after; and no
    ``opensim.log`` file sink (OpenSim would write one into the working folder)."""
    level = opensim.Logger.getLevel()
    opensim.Logger.removeFileSink()
    opensim.Logger.setLevelString("error")
    try:
        yield
    finally:
        # Setting the level logs "Set log level to ..." on the console: restore it with fd 1 silenced.
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                opensim.Logger.setLevel(level)
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _scaled_by_opensim(opensim, source: Path, parsed, mj_model, body_scales) -> ET.ElementTree:
    """The source ``.osim`` scaled by OpenSim's ``Model.scale`` with each body's scale vector,
    masses scaled with the bodies (``preserveMassDist`` false, no total mass: the caller sets the
    masses), as an XML tree."""
    scale_set = opensim.ScaleSet()
    for name in parsed.bodies:
        scale = opensim.Scale()
        scale.setSegmentName(name)
        scale.setScaleFactors(opensim.Vec3(*map(float, body_scales[mj_model.body(name).id])))
        scale.setApply(True)
        scale_set.cloneAndAppend(scale)
    with _quiet(opensim), tempfile.TemporaryDirectory() as tmp:
        try:
            osim_model = opensim.Model(str(source))
            state = osim_model.initSystem()
            if not osim_model.scale(state, scale_set, False, -1.0):
                raise InputError(f"{source}: OpenSim's Model.scale failed")
            written = os.path.join(tmp, "scaled.osim")
            osim_model.printToXML(written)
        except RuntimeError as error:
            raise InputError(f"{source}: OpenSim could not scale the model: {error}") from error
        return ET.ElementTree(read_document(Path(written)))


def _has_muscles(document: ET.Element) -> bool:
    return any(el.tag.endswith("Muscle") for el in document.iter())


def _per_axis(parsed, mj_model, body_scales) -> bool:
    return any(np.ptp(body_scales[mj_model.body(name).id]) > 0 for name in parsed.bodies)


def _axis_function(axis: ET.Element) -> ET.Element | None:
    """The function element of a ``TransformAxis`` (unwrapping the older ``<function>`` holder)."""
    fn = next((c for c in axis if c.tag not in ("coordinates", "axis")), None)
    return fn[0] if fn is not None and fn.tag == "function" and len(fn) else fn


def _translation_multipliers(document: ET.Element, parsed, root: ET.Element, mj_model, body_scales) -> None:
    """The factor OpenSim's ``Model.scale`` multiplied each CustomJoint translation function by
    (``axis · s`` of the parent body's scale factors) replaced by the core's, ``|s ⊙ axis|`` with
    the unit axis in the parent body's frame: the same for principal axes and positive factors,
    and the length the core scales an oblique translation by (for equal factors, ``s``), so that
    the ``.osim`` moves its bodies where the MuJoCo model does. (OpenSim moves along the unit
    axis: the ``.osim``'s axis, e.g. ``1 0.2 0``, need not be one.)"""
    source_root = document.find("Model")
    for el in root.findall("JointSet/objects/CustomJoint"):
        joint = next((j for j in parsed.joints if j.name == el.get("name")), None)
        original = source_root.find(f"JointSet/objects/CustomJoint[@name='{el.get('name')}']")
        if joint is None or original is None:
            continue
        base, x = parsed.frame_in_base(joint.parent_frame)
        s = np.ones(3) if base == "/ground" else body_scales[mj_model.body(parsed.body_name(base)).id]
        for axis in el.findall("SpatialTransform/TransformAxis"):
            if not axis.get("name", "").startswith("translation"):
                continue
            fn = _axis_function(axis)
            if fn is None or fn.tag != "MultiplierFunction":
                continue
            before = _axis_function(original.find(f"SpatialTransform/TransformAxis[@name='{axis.get('name')}']"))
            m0 = float(before.findtext("scale", "1")) if before is not None and before.tag == "MultiplierFunction" else 1.0
            direction = x[:3, :3] @ _floats(axis, "axis", "1 0 0")
            direction = direction / np.linalg.norm(direction)
            fn.find("scale").text = repr(m0 * float(np.linalg.norm(s * direction)))
