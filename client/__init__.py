"""Client of the sentiment server (gRPC) and batch scorer for files of reviews; see docs/batch-scoring.md."""
