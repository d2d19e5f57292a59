"""GPU allocations from the kubelet pod-resources API: parser, poller and correlation.

`api_pb2`/`api_pb2_grpc` are generated from `proto/podresources/v1/api.proto` by
`make proto`; the rest of the agent goes through `client`, `devices` and `join`.
"""
