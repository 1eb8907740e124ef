"""Federated learning (issue 14)."""
