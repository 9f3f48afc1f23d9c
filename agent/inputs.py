"""What the agent is asked to set up, read from the configuration directory the DaemonSet mounts.

The directory (`APPARATE_AGENT_CONFIG_DIR`, default `/etc/apparate/agent`) holds:

- `agent.json` (from the suite's ConfigMap):

      {"registries": [{"url": "http://registry.example:5000"},
                      {"url": "https://registry.internal", "ca": "-----BEGIN CERTIFICATE-----..."}],
       "no_background_fetch": false}

  `url` is the registry instance's URL: `http://` makes it plain HTTP for containerd and the
  snapshotter; `ca` (PEM) is a private CA for an `https://` one. `no_background_fetch` (optional)
  stops the snapshotter from fetching the rest of each layer in the background.
- `dockerconfig.json` (optional, the suite's pull Secret, key `.dockerconfigjson`): a docker
  config with `auths`; the snapshotter reads its credentials to fetch layers.

Anything malformed is an `InputError` whose message says what to fix; nothing is written then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

AGENT_JSON = "agent.json"
DOCKER_CONFIG_JSON = "dockerconfig.json"
# host[:port] as image references write it: DNS name or IPv4 address, or a bracketed IPv6 address.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


class InputError(Exception):
    """The mounted configuration cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Registry:
    """A registry the node lazy-pulls from: `host` is `name[:port]`, as in image references."""

    host: str
    scheme: str
    ca_pem: str | None = None

    @property
    def insecure(self) -> bool:
        return self.scheme == "http"

    @property
    def needs_hosts_file(self) -> bool:
        """containerd's CRI plugin needs a hosts.toml for plain HTTP or a private CA."""
        return self.insecure or bool(self.ca_pem)

    @property
    def server(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass(frozen=True)
class AgentInputs:
    registries: tuple[Registry, ...]
    docker_config: bytes | None
    no_background_fetch: bool = False


def parse_registry(entry: object, where: str) -> Registry:
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        raise InputError(f"{where}: each registry needs a \"url\" string")
    url = entry["url"].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(parts.netloc or ""):
        raise InputError(f"{where}: {url!r} is not a registry URL like http://host:port or https://host")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InputError(f"{where}: {url!r} has a path; give the registry's address only")
    ca = entry.get("ca")
    if ca is not None:
        if parts.scheme != "https":
            raise InputError(f"{where}: {url!r} is plain HTTP, a CA certificate does not apply")
        if not isinstance(ca, str) or not _PEM.search(ca):
            raise InputError(f"{where}: the \"ca\" of {url!r} is not a PEM certificate")
    return Registry(parts.netloc.lower(), parts.scheme, ca.strip() + "\n" if ca else None)


def load_inputs(config_dir: Path) -> AgentInputs:
    agent_json = config_dir / AGENT_JSON
    try:
        document = json.loads(agent_json.read_text())
    except FileNotFoundError as error:
        raise InputError(f"{agent_json} is missing: the suite's ConfigMap is not mounted") from error
    except (OSError, ValueError) as error:
        raise InputError(f"{agent_json} cannot be read as JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("registries"), list):
        raise InputError(f"{agent_json}: expected an object with a \"registries\" list")
    registries = tuple(parse_registry(entry, str(agent_json)) for entry in document["registries"])
    if len({registry.host for registry in registries}) != len(registries):
        raise InputError(f"{agent_json}: a registry is listed twice")
    no_background_fetch = document.get("no_background_fetch", False)
    if not isinstance(no_background_fetch, bool):
        raise InputError(f"{agent_json}: \"no_background_fetch\" must be true or false")
    docker_config = None
    docker_json = config_dir / DOCKER_CONFIG_JSON
    if docker_json.exists():
        docker_config = docker_json.read_bytes()
        try:
            auths = json.loads(docker_config).get("auths")
        except (ValueError, AttributeError):
            auths = None
        if not isinstance(auths, dict):
            raise InputError(f"{docker_json} is not a docker config with an \"auths\" object")
    return AgentInputs(registries, docker_config, no_background_fetch)
