"""`dlforge monitor`: compare new data or a server's request log with a run's reference profile (`dlforge.drift`),
and write the drift report."""
