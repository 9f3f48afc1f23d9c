"""gRPC definitions the agent needs from containerd, reduced to the calls it makes.

The `*_pb2.py` / `*_pb2_grpc.py` modules are generated from the `.proto` files beside them and
committed, so the agent image needs no code generator. After editing a .proto, regenerate from
the repository root with the pinned grpcio-tools:

    python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. agent/proto/*.proto

(tests/agent/test_protos.py fails when the committed modules differ from what that gives.)
"""
