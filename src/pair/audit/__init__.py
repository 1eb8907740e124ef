"""Audit trail (who did what, when, from where) and the ordered change log."""
