"""Data sources and built-in datasets."""
