"""The inference engine, no gRPC: the inference core (validate, tokenize, label), the dynamic
batcher and its worker threads, the split of a batch into model runs, and the statistics.

It runs the model through :mod:`runtime.session`.
"""
