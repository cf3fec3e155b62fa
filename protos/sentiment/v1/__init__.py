"""sentiment.v1 protocol (generated code)."""
