"""Public API contract: .proto files and the Python code generated from them (protos/generate.py)."""
