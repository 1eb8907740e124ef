"""PAIR - Pandemic AI Response platform for radiology."""

__version__ = "0.1.0"
