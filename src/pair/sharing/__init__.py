"""Consortium sharing: hub membership (joining, credentials) and the site outbox to the hub."""
