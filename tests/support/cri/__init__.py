"""A minimal client of containerd's CRI image service, calling it the way kubelet does.

Debian has no crictl and no CRI API package: `api.proto` here declares the few CRI messages the
tests need (field numbers from k8s.io/cri-api runtime/v1); `api_pb2*.py` are generated from it
(regenerate from the repository root with
`python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. tests/support/cri/api.proto`).
"""

from __future__ import annotations

import grpc

from . import api_pb2, api_pb2_grpc


class ImageService:
    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(f"unix://{address}")
        self.stub = api_pb2_grpc.ImageServiceStub(self.channel)

    def pull(self, image: str, credentials: tuple[str, str] | None = None, timeout: float = 120) -> str:
        """PullImage, with registry credentials as kubelet passes them from an imagePullSecret;
        returns the image id."""
        auth = api_pb2.AuthConfig(username=credentials[0], password=credentials[1]) if credentials else None
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image), auth=auth)
        return self.stub.PullImage(request, timeout=timeout).image_ref

    def status(self, image: str) -> api_pb2.Image | None:
        response = self.stub.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)), timeout=30)
        return response.image if response.HasField("image") else None

    def remove(self, image: str) -> None:
        self.stub.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)), timeout=60)

    def close(self) -> None:
        self.channel.close()
