"""The model contract: everything that turns text into a probability, without gRPC or PyTorch.

Training, export, the server, the client and the benchmarks import it; it imports none of
them (``lint-imports`` checks, contracts in pyproject.toml).

- :mod:`runtime.preprocessing`: text -> token ids (truncation, padding), shared by training
  and serving.
- :mod:`runtime.repository`: the model repository format (layout, metadata.json's required
  fields and signature types) and the one verified loader.
- :mod:`runtime.repository_writer`: writing a new version into a repository, atomically.
- :mod:`runtime.session`: the ONNX Runtime session (providers, thread plan, warm-up, run cost).
- :mod:`runtime.run_cost`: the modelled cost of one model run, by shape.
- :mod:`runtime.errors`: :class:`~runtime.errors.ConfigurationError`.
"""
