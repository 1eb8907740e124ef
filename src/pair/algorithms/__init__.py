"""AI algorithm repository: validated ONNX packages and a sandboxed inference runner."""
