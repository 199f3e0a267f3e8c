"""ONNX backend conformance: ONNX's own node and model tests run through Tessera."""
