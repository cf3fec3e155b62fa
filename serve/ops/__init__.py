"""Operations beside the request path: settings, domain errors, logs, metrics, transport
security and the gRPC edge interceptor (status codes, access logs, metrics per RPC).
"""
