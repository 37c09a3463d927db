"""Drift monitoring: the reference profile a run keeps, and the tests that compare new data with it."""
