"""Fitting a body model to data: trajectories, losses, fit variables, solvers and the fit scopes."""
