"""What FROM does with a name: the local store first, a registry pull otherwise.

With `pull_always=True` (`pybuild build --pull`) a tag that came from a registry is asked
of it again even when the store has it, so a moved tag is noticed; blobs already in the
store are not fetched twice either way. Local names (built, imported) stay local.
"""
from __future__ import annotations

from typing import Iterable

from pybuild.errors import ImageNotFound
from pybuild.image.store import InvalidReference, StoredImage, parse_ref
from pybuild.image.types import Platform
from pybuild.registry.errors import RegistryError
from pybuild.registry.records import INDEX_CHOICE, PULLED_TAG


def _pulled_tag(root, ref: str) -> bool:
    """Whether `ref` is a tag that came from a registry. `--pull` asks the registry again
    about those only: a digest cannot move, and a name given to a local build or import
    was never the registry's to answer for."""
    try:
        parsed = parse_ref(ref)
    except InvalidReference:
        return False
    return not parsed.digest and root.index.get(PULLED_TAG, str(parsed), touch=False) is not None


def lookup_local(root, ref: str, platform: Platform) -> StoredImage | None:
    image = root.images.lookup(ref)
    if image is not None:
        return image
    try:
        parsed = parse_ref(ref)
    except InvalidReference:
        return None
    if parsed.digest:  # `name@<index digest>`: the manifest chosen from it last time
        rec = root.index.get(INDEX_CHOICE, f"{parsed.digest} {platform}")
        if rec is not None:
            return root.images.lookup(rec.value["manifest"])
    return None


def resolve_image(root, ref: str, platform: str | None = None, *, pull_always: bool = False,
                  insecure: Iterable[str] = ()) -> StoredImage:
    want = Platform.parse(platform) if platform else Platform.host()
    image = lookup_local(root, ref, want)
    if image is not None and not (pull_always and _pulled_tag(root, ref)):
        return image
    try:
        parsed = parse_ref(ref)
    except InvalidReference:
        raise ImageNotFound(f"{ref}: image not found in the local store") from None
    from pybuild.registry.pull import pull  # lazily: httpx is only needed to pull

    try:
        result = pull(root, str(parsed), platform=want, insecure=insecure)
    except RegistryError as e:
        where = "" if pull_always else "not found in the local store, and "
        raise ImageNotFound(f"{ref}: {where}pulling it failed: {e}") from None
    return root.images.get(result.manifest_digest)
