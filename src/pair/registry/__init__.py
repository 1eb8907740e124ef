"""National registry at the hub."""
