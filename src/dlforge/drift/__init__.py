"""Drift statistics and the reference profile a run keeps: shared by `dlforge monitor` and the server's drift window,
one layer below both."""
