"""The compatibility verdict of a node: can it load accelerated (eStargz) images on demand?

Pure functions over the node facts a sync records. The requirements are the product's
documented ones, with thresholds from settings: Kubernetes >= APPARATE_MIN_KUBERNETES_VERSION,
runtime containerd >= APPARATE_MIN_CONTAINERD_VERSION (Docker, CRI-O: incompatible), OS family
in APPARATE_SUPPORTED_OS; families in APPARATE_FUSE_WARNING_OS get a FUSE warning.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from clusters.choices import Compatibility


@dataclass(frozen=True)
class Verdict:
    compatibility: str
    reasons: list[str]


def parse_version(text: str) -> tuple[int, ...] | None:
    """(major, minor, patch) from strings like 'v1.24.3+k3s1', '1.4.3-tke.1', '1.6.20'."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _at_least(found: tuple[int, ...], minimum: str) -> bool:
    wanted = parse_version(minimum) or (0, 0, 0)
    return found >= wanted


def verdict(kubelet_version: str, container_runtime: str, runtime_version: str, os_image: str,
            operating_system: str = "linux") -> Verdict:
    """The verdict and every reason behind it (each unmet requirement, each warning)."""
    problems: list[str] = []
    warnings: list[str] = []

    if operating_system and operating_system != "linux":
        problems.append(f"Operating system {operating_system} is not supported; Linux nodes only.")

    kube = parse_version(kubelet_version)
    minimum_kube = settings.APPARATE_MIN_KUBERNETES_VERSION
    if kube is None:
        problems.append("The kubelet version is unknown.")
    elif not _at_least(kube, minimum_kube):
        problems.append(f"Kubernetes {kubelet_version} is older than {minimum_kube}.")

    minimum_containerd = settings.APPARATE_MIN_CONTAINERD_VERSION
    runtime = (container_runtime or "").lower()
    if runtime != "containerd":
        shown = container_runtime or "unknown"
        problems.append(f"Container runtime {shown} is not supported; containerd {minimum_containerd} or later is.")
    else:
        found = parse_version(runtime_version)
        if found is None:
            problems.append("The containerd version is unknown.")
        elif not _at_least(found, minimum_containerd):
            problems.append(f"containerd {runtime_version} is older than {minimum_containerd}.")

    family = next(
        (name for name in settings.APPARATE_SUPPORTED_OS if name.lower() in (os_image or "").lower()), None
    )
    if family is None:
        supported = ", ".join(settings.APPARATE_SUPPORTED_OS)
        problems.append(f"OS image '{os_image or 'unknown'}' is not supported; supported: {supported}.")
    elif family in settings.APPARATE_FUSE_WARNING_OS:
        warnings.append(f"{family} nodes need FUSE installed (yum install -y fuse) before they can lazy-pull.")

    if problems:
        return Verdict(Compatibility.INCOMPATIBLE, problems + warnings)
    if warnings:
        return Verdict(Compatibility.WARNING, warnings)
    return Verdict(Compatibility.COMPATIBLE, [])
