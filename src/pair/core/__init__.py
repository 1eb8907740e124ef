"""Shared foundations: settings, errors, security helpers."""
