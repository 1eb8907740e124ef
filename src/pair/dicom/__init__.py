"""Shared DICOM foundations: parsing and validation, the DICOM JSON model, rendering."""
