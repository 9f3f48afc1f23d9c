"""The image catalogue of an instance: repositories and tags beside their accelerated twins.

Read live from the registry (catalog, tag lists, manifests) through the converter's client and
joined with the conversion jobs in the database. A twin is `<tag><suffix>` in the same repository;
a twin whose source tag is gone is an orphan. Deleting goes by manifest digest and touches only the
image asked for: the accelerated manifest has no `subject` and shares no manifest with its source.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.core.paginator import Page, Paginator

from converter.registry import DeletionDisabled, RegistryClient, RegistryError, RegistryNotFound
from pipeline.models import ConversionJob
from registries.models import Instance

MAX_REPOSITORIES = 50  # repositories read per page of the Images view (each costs a tags list and HEADs)


@dataclass
class ImageInfo:
    tag: str
    digest: str = ""
    size: int | None = None  # config + layers (summed over platforms for an index)
    error: str = ""


@dataclass
class TagRow:
    """One source tag and its twin (either may be missing: an orphan has no source)."""

    source: ImageInfo | None
    twin: ImageInfo | None
    job: ConversionJob | None = None

    @property
    def orphan(self) -> bool:
        return self.source is None and self.twin is not None

    @property
    def tag(self) -> str:
        return self.source.tag if self.source else self.twin.tag.removesuffix(settings.APPARATE_ACCELERATED_SUFFIX)


@dataclass
class RepositoryRows:
    path: str
    rows: list[TagRow] = field(default_factory=list)
    error: str = ""


@dataclass
class Catalogue:
    repositories: list[RepositoryRows] = field(default_factory=list)
    page: Page | None = None  # which slice of the matching repositories this is
    error: str = ""

    @property
    def original_bytes(self) -> int:
        return sum(r.source.size or 0 for repo in self.repositories for r in repo.rows if r.source)

    @property
    def accelerated_bytes(self) -> int:
        return sum(r.twin.size or 0 for repo in self.repositories for r in repo.rows if r.twin)


class DeleteRefused(Exception):
    """The registry would not delete the manifest; `message` says why.

    `kind` is DISABLED (deletion switched off in the registry), NOT_FOUND (no such manifest),
    INVALID (not a digest) or FAILED (any other registry answer).
    """

    DISABLED, NOT_FOUND, INVALID, FAILED = "disabled", "not_found", "invalid", "failed"

    def __init__(self, message: str, kind: str = FAILED):
        super().__init__(message)
        self.message = message
        self.kind = kind


def _image(client: RegistryClient, path: str, tag: str) -> ImageInfo:
    try:
        manifest = client.get_manifest(path, tag)
        document = manifest.json()
        if manifest.is_index:
            size = len(manifest.content)
            for entry in document.get("manifests") or []:
                child = client.get_manifest(path, entry["digest"]).json()
                size += entry.get("size", 0) + _image_size(child)
        else:
            size = _image_size(document)
        return ImageInfo(tag, manifest.digest, size)
    except RegistryNotFound:
        return ImageInfo(tag, error="deleted while listing")
    except RegistryError as error:
        return ImageInfo(tag, error=error.message)


def _image_size(manifest: dict) -> int:
    return (manifest.get("config") or {}).get("size", 0) + sum(layer.get("size", 0) for layer in
                                                               manifest.get("layers") or [])


def _repository(instance: Instance, client: RegistryClient, path: str) -> RepositoryRows:
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    repo = RepositoryRows(path)
    try:
        tags = sorted(client.tags(path))
    except RegistryError as error:
        repo.error = error.message
        return repo
    present = set(tags)
    namespace, _, repository = path.partition("/")
    jobs: dict[str, ConversionJob] = {}
    for job in ConversionJob.objects.filter(instance=instance, namespace=namespace, repository=repository).order_by(
            "created_at"):
        jobs[job.source_tag] = job  # the latest job of each tag wins
    for tag in tags:
        if tag.endswith(suffix):
            if tag.removesuffix(suffix) not in present:
                repo.rows.append(TagRow(None, _image(client, path, tag), jobs.get(tag.removesuffix(suffix))))
            continue
        twin = _image(client, path, tag + suffix) if tag + suffix in present else None
        repo.rows.append(TagRow(_image(client, path, tag), twin, jobs.get(tag)))
    repo.rows.sort(key=lambda row: row.tag)
    return repo


def list_images(instance: Instance, namespace: str = "", repository: str = "", page: int | str = 1) -> Catalogue:
    """One page of the instance's repositories (filtered by namespace and a repository substring),
    each with its tags beside their twins. The catalog is listed whole; only the repositories of
    the page are read further."""
    catalogue = Catalogue()
    with instance.registry_client(retries=1) as client:  # a page view: answer soon when the registry is down
        try:
            paths = client.catalog()
        except RegistryError as error:
            catalogue.error = error.message
            return catalogue
        paths = [p for p in sorted(paths) if (not namespace or p.partition("/")[0] == namespace)
                 and (not repository or repository in p.partition("/")[2])]
        catalogue.page = Paginator(paths, MAX_REPOSITORIES).get_page(page)
        for path in catalogue.page:
            catalogue.repositories.append(_repository(instance, client, path))
    return catalogue


def delete_image(instance: Instance, path: str, digest: str) -> None:
    """Delete one image (manifest) by digest; its twin or source is a different manifest and stays.

    Raises DeleteRefused with the registry's answer, e.g. when deletion is disabled there.
    """
    with instance.registry_client() as client:
        try:
            client.delete_manifest(path, digest)
        except DeletionDisabled as error:
            raise DeleteRefused(f"The registry has image deletion disabled: {error.message}",
                                DeleteRefused.DISABLED) from None
        except ValueError as error:
            raise DeleteRefused(str(error), DeleteRefused.INVALID) from None
        except RegistryNotFound as error:
            raise DeleteRefused(f"No such image: {error.message}", DeleteRefused.NOT_FOUND) from None
        except RegistryError as error:
            raise DeleteRefused(error.message) from None
