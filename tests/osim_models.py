"""Models built through the OpenSim API for the tests (no shared data needed), and the helpers
that build them (``custom_joint``: CustomJoints with arbitrary axes and functions).

``build_leg``: a small leg (free pelvis, hip, knee with spline translations and a coupled
patella, ankle, a locked toe joint, clamped ranges) with 15 markers.
"""

import numpy as np
import opensim as osim


def vec3(*v):
    return osim.Vec3(*[float(x) for x in v])


def adopted(fn):
    """``fn`` handed over to the OpenSim object that takes it (else Python frees it a second time)."""
    fn.this.disown()
    return fn


def spline(cls, x, y):
    fn = cls()
    for a, b in zip(x, y):
        fn.addPoint(a, b)
    return fn


def custom_joint(name, parent, parent_offset, child, child_offset, axes):
    """axes: {axis index 0..5: (coordinate or None, (x, y, z), function)}, 0-2 rotations, 3-5 translations.

    Axes not given stay still (Constant 0) about/along directions independent of the given ones,
    as OpenSim requires.
    """
    transform = osim.SpatialTransform()
    for group in (range(3), range(3, 6)):
        used = [np.asarray(axes[i][1], float) / np.linalg.norm(axes[i][1]) for i in group if i in axes]
        for index in group:
            if index in axes:
                coordinate, direction, fn = axes[index]
            else:
                direction = min(np.eye(3), key=lambda e: max([abs(e @ u) for u in used], default=0.0))
                used.append(direction)
                coordinate, fn = None, osim.Constant(0.0)
            axis = transform.updTransformAxis(index)
            if coordinate is not None:
                axis.setCoordinateNames(osim.ArrayStr(coordinate, 1))
            axis.setAxis(vec3(*[float(v) for v in direction]))
            axis.setFunction(adopted(fn))
    return osim.CustomJoint(name, parent, vec3(*parent_offset[0]), vec3(*parent_offset[1]),
                            child, vec3(*child_offset[0]), vec3(*child_offset[1]), transform)


def _coordinate(joint, index, lo, hi, clamped, default=0.0, locked=False, name=None):
    c = joint.upd_coordinates(index)
    if name is not None:
        c.setName(name)
    c.setRangeMin(lo)
    c.setRangeMax(hi)
    c.setDefaultClamped(clamped)
    c.setDefaultValue(default)
    c.setDefaultLocked(locked)


def build_leg(path):
    model = osim.Model()
    model.setName("leg")
    bodies = {}
    for name, mass in (("pelvis", 10.0), ("femur", 7.0), ("tibia", 3.0), ("patella", 0.1), ("foot", 1.0), ("toes", 0.2)):
        bodies[name] = osim.Body(name, mass, vec3(0, 0, 0), osim.Inertia(0.05, 0.05, 0.05))
        model.addBody(bodies[name])
    linear = osim.LinearFunction
    pelvis = custom_joint("ground_pelvis", model.getGround(), ((0, 0, 0), (0, 0, 0)), bodies["pelvis"], ((0, 0, 0), (0, 0, 0)), {
        0: ("pelvis_tilt", (0, 0, 1), linear(1, 0)), 1: ("pelvis_list", (1, 0, 0), linear(1, 0)),
        2: ("pelvis_rotation", (0, 1, 0), linear(1, 0)), 3: ("pelvis_tx", (1, 0, 0), linear(1, 0)),
        4: ("pelvis_ty", (0, 1, 0), linear(1, 0)), 5: ("pelvis_tz", (0, 0, 1), linear(1, 0))})
    hip = custom_joint("hip", bodies["pelvis"], ((-0.07, -0.07, 0.08), (0, 0, 0)), bodies["femur"], ((0, 0, 0), (0, 0, 0)), {
        0: ("hip_flexion", (0, 0, 1), linear(1, 0)), 1: ("hip_adduction", (1, 0, 0), linear(1, 0)),
        2: ("hip_rotation", (0, 1, 0), linear(1, 0))})
    knee = custom_joint("knee", bodies["femur"], ((0, 0, 0), (0, 0, 0)), bodies["tibia"], ((0, 0, 0), (0, 0, 0)), {
        0: ("knee_angle", (0, 0, 1), linear(1, 0)),
        3: ("knee_angle", (1, 0, 0), spline(osim.SimmSpline, [-2.0, -1.0, -0.5, 0.0, 0.2], [-0.003, 0.0018, 0.0041, -0.001, -0.004])),
        4: ("knee_angle", (0, 1, 0), spline(osim.SimmSpline, [-2.0, -1.2, -0.5, 0.0, 0.2], [-0.422, -0.408, -0.399, -0.396, -0.395]))})
    patella = custom_joint("patellofemoral", bodies["femur"], ((0.03, -0.38, 0), (0, 0, 0)), bodies["patella"], ((0, 0, 0), (0, 0, 0)), {
        0: ("knee_beta", (0, 0, 1), linear(1, 0)), 3: ("knee_beta", (1, 0, 0), linear(0.02, 0.0))})
    ankle = osim.PinJoint("ankle", bodies["tibia"], vec3(0, -0.43, 0), vec3(0, 0, 0), bodies["foot"], vec3(0, 0, 0), vec3(0, 0, 0))
    mtp = osim.PinJoint("mtp", bodies["foot"], vec3(0.15, -0.04, 0), vec3(0, 0, 0), bodies["toes"], vec3(0, 0, 0), vec3(0, 0, 0))
    for joint in (pelvis, hip, knee, patella, ankle, mtp):
        model.addJoint(joint)
    for i in range(3):
        _coordinate(pelvis, i, -1.5, 1.5, False)
    for i in range(3, 6):
        _coordinate(pelvis, i, -3.0, 3.0, False, default=0.9 if i == 4 else 0.0)
    _coordinate(hip, 0, -0.5, 2.0, True)
    _coordinate(hip, 1, -0.8, 0.5, True)
    _coordinate(hip, 2, -0.7, 0.7, True)
    _coordinate(knee, 0, -2.0, 0.05, True)
    _coordinate(patella, 0, -3.0, 3.0, False)
    _coordinate(ankle, 0, -0.7, 0.5, True, name="ankle_angle")
    _coordinate(mtp, 0, -0.5, 0.5, False, default=0.1, locked=True, name="mtp_angle")
    coupler = osim.CoordinateCouplerConstraint()
    coupler.setName("patella_coupler")
    coupler.setIndependentCoordinateNames(osim.ArrayStr("knee_angle", 1))
    coupler.setDependentCoordinateName("knee_beta")
    coupler.setFunction(adopted(spline(osim.SimmSpline, [-2.0, -1.0, 0.0, 0.2], [-1.6, -0.75, 0.0, 0.12])))
    model.addConstraint(coupler)
    for name, body, location in (
        ("RASI", "pelvis", (0.02, 0.02, 0.12)), ("LASI", "pelvis", (0.02, 0.02, -0.12)),
        ("SACR", "pelvis", (-0.16, 0.03, 0.0)), ("THI1", "femur", (0.02, -0.2, 0.07)),
        ("THI2", "femur", (0.05, -0.3, 0.01)), ("KNE", "femur", (0.0, -0.4, 0.05)),
        ("KNE_MED", "femur", (0.0, -0.4, -0.05)), ("TIB1", "tibia", (0.03, -0.15, 0.05)),
        ("TIB2", "tibia", (0.01, -0.3, 0.05)), ("ANK", "tibia", (0.0, -0.42, 0.05)),
        ("PAT", "patella", (0.04, 0.0, 0.0)), ("HEE", "foot", (-0.05, -0.03, 0.0)),
        ("MT5", "foot", (0.12, -0.04, 0.04)), ("MT1", "foot", (0.12, -0.04, -0.03)), ("TOE", "toes", (0.04, 0.0, 0.0)),
    ):
        model.addMarker(osim.Marker(name, bodies[body], vec3(*location)))
    model.finalizeConnections()
    model.printToXML(str(path))
    return path
