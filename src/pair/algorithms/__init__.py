"""AI algorithm repository: validated ONNX packages and a sandboxed inference runner."""

from pathlib import Path

DEMO_PACKAGE = Path(__file__).parent / "data" / "demo-cxr-opacity"
"""The DEMO package (synthetic data, not for clinical use) shipped with PAIR."""

DEMO_SYNTH_PACKAGE = Path(__file__).parent / "data" / "demo-synth-cxr"
"""The DEMO package trained on ``pair synth`` radiographs (``scripts/train_demo_algorithm.py
--source synth``): what ``make demo`` registers and evaluates on its synthetic cohort."""
