"""`--chown` names of a `COPY --link`, resolved in the stage the copy is linked onto.

A linked copy runs on an empty filesystem (a `FileOp` on `Scratch`, merged onto the stage
by `graph.Merge`), so there is no /etc/passwd where its files land. BuildKit fails there
("invalid user index: -1") and now rejects names with --link outright; pybuild looks
them up in the stage below instead (`FileOp.users_from`). The step's cache key then holds
the ids the names resolved to, not the stage's layers: the layer stays independent of
everything below it except the passwd/group entries it actually used.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from pybuild import graph

__all__ = ["resolve_owners", "with_owners", "owners_of"]


def resolve_owners(actions: Sequence, rootfs: str) -> dict[str, str]:
    """chown spec -> "uid:gid" for every action whose chown names a user or group,
    looked up in `rootfs`'s /etc/passwd and /etc/group (errors as a plain COPY's)."""
    from pybuild.fileops import parse_chown

    out: dict[str, str] = {}
    for action in actions:
        spec = getattr(action, "chown", "")
        if spec and spec not in out and graph.chown_has_names(spec):
            owner = parse_chown(spec, rootfs)
            out[spec] = f"{owner.uid}:{owner.gid}"
    return out


def with_owners(actions: Sequence, owners: Mapping[str, str]) -> tuple:
    """The actions with their chown names replaced by the resolved numbers."""
    return tuple(dataclasses.replace(a, chown=owners[a.chown])
                 if getattr(a, "chown", "") in owners else a for a in actions)


def owners_of(op: graph.FileOp, store, layers: tuple, empty_dir: str) -> dict[str, str]:
    """Resolve `op`'s chown names in the filesystem made of `layers` (its `users_from`),
    mounting it read-only only when some chown names a user or group."""
    if not any(graph.chown_has_names(getattr(a, "chown", "")) for a in op.actions):
        return {}
    if not layers:
        return resolve_owners(op.actions, empty_dir)
    from pybuild.sandbox.mounted import mounted_rootfs

    with mounted_rootfs(store.layer_dirs(layers)) as rootfs:
        return resolve_owners(op.actions, rootfs)
