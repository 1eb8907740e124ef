"""AI algorithm repository: validated ONNX packages and a sandboxed inference runner."""

from pathlib import Path

DEMO_PACKAGE = Path(__file__).parent / "data" / "demo-cxr-opacity"
"""The DEMO package (synthetic data, not for clinical use) shipped with PAIR."""
