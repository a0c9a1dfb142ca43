"""The body model: metadata, per-person parameters, coordinate functions, kinematics and scaling."""
