"""Facilities, users, roles, API tokens and the DICOM peers allowed to send."""
