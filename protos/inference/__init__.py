"""KServe v2 / Open Inference Protocol, package `inference` (generated code)."""
