"""Builds small OCI images in an OCI layout directory and pushes them with skopeo.

Tests use this instead of a container engine: layers are tar archives made with `tarfile`,
gzip-compressed, and the layout is copied into the test registry with `skopeo copy`.
"""

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(files: dict[str, bytes | None], mtime: int = 1_700_000_000) -> bytes:
    """A tar archive: `name/` or a None value makes a directory, anything else a regular file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = mtime
            if content is None or name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    layers: list[dict[str, bytes | None]] = field(default_factory=lambda: [{"hello.txt": b"hello\n"}])


class OCILayout:
    """An OCI image layout on disk holding one image (one platform) or an index of several."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def add_blob(self, data: bytes) -> dict:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def _image(self, platform: Platform) -> dict:
        layers, diff_ids = [], []
        for files in platform.layers:
            raw = tar_bytes(files)
            diff_ids.append(sha256(raw))
            compressed = gzip.compress(raw, mtime=0)
            layers.append({"mediaType": OCI_LAYER_GZIP, **self.add_blob(compressed)})
        config = {
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_descriptor = {"mediaType": OCI_CONFIG, **self.add_blob(json.dumps(config).encode())}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}
        return {"mediaType": OCI_MANIFEST, **self.add_blob(json.dumps(manifest).encode())}

    def write(self, platforms: list[Platform], tag: str = "latest") -> str:
        """Write the image (an index when several platforms are given); returns its digest."""
        if len(platforms) == 1:
            top = self._image(platforms[0])
        else:
            manifests = [
                {**self._image(p), "platform": {"os": p.os, "architecture": p.architecture}} for p in platforms
            ]
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
            top = {"mediaType": OCI_INDEX, **self.add_blob(json.dumps(index).encode())}
        top["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
        return top["digest"]


def push_image(
    tmp_path: Path,
    destination: str,
    platforms: list[Platform] | None = None,
    credentials: tuple[str, str] | None = None,
) -> str:
    """Build an image and copy it to `destination` (host:port/repo:tag) with skopeo; returns its digest."""
    layout = OCILayout(tmp_path / f"layout-{hashlib.sha256(destination.encode()).hexdigest()[:8]}")
    digest = layout.write(platforms or [Platform()])
    command = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--preserve-digests"]
    if credentials:
        command += ["--dest-creds", f"{credentials[0]}:{credentials[1]}"]
    command += [f"oci:{layout.root}:latest", f"docker://{destination}"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return digest
