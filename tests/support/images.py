"""Builds small OCI images in an OCI layout directory and pushes them with skopeo.

Tests use this instead of a container engine: layers are tar archives made with `tarfile`,
gzip-compressed, and the layout is copied into the test registry with `skopeo copy`. With
`docker=True` the manifests, index, config and layers use Docker schema 2 media types instead of OCI;
skopeo's OCI layout transport refuses those, so such images are pushed with plain HTTP requests
(`push_raw`, also handy for crafting manifests the registry stores as given).
"""

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class Symlink:
    """A symbolic link entry in `tar_bytes`."""

    target: str


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Executable:
    """A regular file with mode 0755 in `tar_bytes` (plain bytes get 0644)."""

    content: bytes


def tar_bytes(files: dict[str, bytes | Symlink | Executable | None], mtime: int = 1_700_000_000) -> bytes:
    """A tar archive: `name/` or a None value makes a directory, a `Symlink` a symbolic link,
    an `Executable` a file runnable in a container, anything else a regular file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = mtime
            if content is None or name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif isinstance(content, Symlink):
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, content.target
                archive.addfile(info)
            elif isinstance(content, Executable):
                info.size, info.mode = len(content.content), 0o755
                archive.addfile(info, io.BytesIO(content.content))
            else:
                info.size, info.mode = len(content), 0o644
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    layers: list[dict[str, bytes | Symlink | Executable | None]] = field(
        default_factory=lambda: [{"hello.txt": b"hello\n"}])
    variant: str | None = None

    @property
    def descriptor_platform(self) -> dict:
        platform = {"architecture": self.architecture, "os": self.os}
        return {**platform, "variant": self.variant} if self.variant else platform


def sample_layers(seed: int = 0, big_file_size: int = 5 * 1024 * 1024) -> list[dict[str, bytes | Symlink | None]]:
    """Three layers with real content: a directory tree with text files and a symlink, a file larger
    than one eStargz chunk (incompressible, so it spans several gzip members), and a small update."""
    noise = hashlib.shake_256(f"apparate-{seed}".encode()).digest(big_file_size)
    return [
        {"etc/": None, "etc/os-release": f"ID=apparate-test\nSEED={seed}\n".encode(),
         "usr/": None, "usr/bin/": None, "usr/bin/tool": b"#!/bin/sh\necho tool\n" * 50,
         "usr/bin/alias": Symlink("tool"), "empty.txt": b""},
        {"opt/": None, "opt/data.bin": noise, "opt/readme.md": b"# data\n" * 1000},
        {"etc/os-release": f"ID=apparate-test\nSEED={seed}\nUPDATED=1\n".encode()},
    ]


class OCILayout:
    """An OCI image layout on disk holding one image (one platform) or an index of several."""

    def __init__(self, root: Path, docker: bool = False):
        self.root = root
        self.manifests: list[dict] = []  # descriptors of the manifests written, children first
        self.manifest_type, self.index_type = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) if docker else (
            OCI_MANIFEST, OCI_INDEX)
        self.config_type, self.layer_type = (DOCKER_CONFIG, DOCKER_LAYER_GZIP) if docker else (
            OCI_CONFIG, OCI_LAYER_GZIP)
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
            layers.append({"mediaType": self.layer_type, **self.add_blob(compressed)})
        config = {
            **platform.descriptor_platform,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_descriptor = {"mediaType": self.config_type, **self.add_blob(json.dumps(config).encode())}
        manifest = {"schemaVersion": 2, "mediaType": self.manifest_type, "config": config_descriptor,
                    "layers": layers}
        descriptor = {"mediaType": self.manifest_type, **self.add_blob(json.dumps(manifest).encode())}
        self.manifests.append(descriptor)
        return descriptor

    def write(self, platforms: list[Platform], tag: str = "latest") -> str:
        """Write the image (an index when several platforms are given); returns its digest."""
        if len(platforms) == 1:
            top = self._image(platforms[0])
        else:
            manifests = [{**self._image(p), "platform": p.descriptor_platform} for p in platforms]
            index = {"schemaVersion": 2, "mediaType": self.index_type, "manifests": manifests}
            top = {"mediaType": self.index_type, **self.add_blob(json.dumps(index).encode())}
            self.manifests.append(top)
        top["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
        return top["digest"]


def push_image(
    tmp_path: Path,
    destination: str,
    platforms: list[Platform] | None = None,
    credentials: tuple[str, str] | None = None,
    docker: bool = False,
) -> str:
    """Build an image and copy it to `destination` (host:port/repo:tag) with skopeo; returns its digest."""
    layout = OCILayout(tmp_path / f"layout-{hashlib.sha256(destination.encode()).hexdigest()[:8]}", docker=docker)
    digest = layout.write(platforms or [Platform()])
    if docker:
        blobs = {path.name: path.read_bytes() for path in (layout.root / "blobs" / "sha256").iterdir()}
        manifest_hexes = {m["digest"].split(":", 1)[1] for m in layout.manifests}
        host, _, reference = destination.partition("/")
        repository, _, tag = reference.rpartition(":")
        push_raw(f"http://{host}", repository,
                 [data for name, data in blobs.items() if name not in manifest_hexes],
                 [(m["digest"] if m is not layout.manifests[-1] else tag, m["mediaType"],
                   blobs[m["digest"].split(":", 1)[1]]) for m in layout.manifests],
                 credentials)
        return digest
    command = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--preserve-digests"]
    if credentials:
        command += ["--dest-creds", f"{credentials[0]}:{credentials[1]}"]
    command += [f"oci:{layout.root}:latest", f"docker://{destination}"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return digest


def push_raw(
    base_url: str,
    repository: str,
    blobs: list[bytes],
    manifests: list[tuple[str, str, bytes]],
    credentials: tuple[str, str] | None = None,
) -> None:
    """Upload blobs (POST then PUT ?digest=) and PUT manifests given as (reference, media type, bytes),
    in order, with plain `requests` and Basic auth: independent of the converter's own client."""
    auth = credentials and tuple(credentials)
    for data in blobs:
        start = requests.post(f"{base_url}/v2/{repository}/blobs/uploads/", auth=auth, timeout=30)
        start.raise_for_status()
        location = requests.compat.urljoin(base_url, start.headers["Location"])
        separator = "&" if "?" in location else "?"
        requests.put(f"{location}{separator}digest={sha256(data)}", data=data, auth=auth, timeout=30,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    for reference, media_type, content in manifests:
        requests.put(f"{base_url}/v2/{repository}/manifests/{reference}", data=content, auth=auth, timeout=30,
                     headers={"Content-Type": media_type}).raise_for_status()
