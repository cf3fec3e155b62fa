"""The wire: gRPC servicers for sentiment.v1, KServe v2 (with Triton's extensions) and the admin
API, the KServe tensor codec, request-stream answering and server reflection.

Servicers only convert protobuf <-> domain types and delegate to :mod:`serve.engine`.
"""
