"""dlforge."""
