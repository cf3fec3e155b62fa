"""sentiment protocols."""
