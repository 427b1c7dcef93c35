"""The gRPC front end: KServe V2 `GRPCInferenceService` (the proto Triton serves), on the one request pipeline.

Runs in every API worker on the worker's own event loop (grpc.aio), beside the HTTP app, with
the servicer and messages that `tritonclient.grpc` generates, so the two always agree.
"""
