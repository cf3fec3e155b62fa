"""The HTTP wire: KServe v2 REST and sentiment.v1 as JSON, on grpc.aio's event loop (aiohttp)."""
