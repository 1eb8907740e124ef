"""Consortium sharing: hub membership (joining, credentials) and the site outbox that pushes to the hub."""
