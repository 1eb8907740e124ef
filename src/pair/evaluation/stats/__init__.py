"""Pure statistical functions on numpy arrays (ROC/DeLong, proportions, calibration, bootstrap)."""
