"""From a solved target to an image: config file (with history) and layer list.

Pure apart from reading the base image's config from the store: history lines come
from the base image, then one per instruction of the target; a line whose step added
no layer (config-only instructions, or a RUN that changed nothing) is `empty_layer`.
"""
from __future__ import annotations

import datetime as _dt
import platform as _platform

from pybuild import graph


def created_timestamp(source_date_epoch: int | None = None) -> str:
    if source_date_epoch is not None:
        t = _dt.datetime.fromtimestamp(source_date_epoch, _dt.timezone.utc)
    else:
        t = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def host_platform() -> tuple[str, str]:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux", arch


def image_config_file(target: graph.ImageTarget, states: dict, base_image=None,
                      source_date_epoch: int | None = None):
    """The OCI config of the target: `states` maps op digest -> SolvedState."""
    from pybuild.image.types import History, ImageConfigFile

    created = created_timestamp(source_date_epoch)
    final = states[target.root.digest]
    layers = tuple(final.layers)

    history: list = []
    base_layers = 0
    if base_image is not None:
        base_layers = len(base_image.layers)
        base_hist = list(base_image.config.history)
        if sum(1 for h in base_hist if not h.empty_layer) != base_layers:
            # a base without usable history (some imports): one line per layer keeps
            # history and diff_ids consistent, which every OCI tool checks
            base_hist = [History(created=base_image.config.created or created,
                                 created_by="", comment="", empty_layer=False, author="")
                         for _ in range(base_layers)]
        history.extend(base_hist)
    for step in target.history:
        state = states.get(step.op.digest) if step.op is not None else None
        added = state is not None and state.layer is not None
        history.append(History(created=created, created_by=step.created_by,
                               comment=step.comment or ("buildkit.dockerfile.v0" if step.created_by else ""),
                               empty_layer=not added, author=""))
    if sum(1 for h in history if not h.empty_layer) != len(layers):
        # a history line per layer is the invariant; if a frontend gave fewer, fill in
        history = [h for h in history if h.empty_layer] + [
            History(created=created, created_by="", comment="", empty_layer=False, author="")
            for _ in layers]

    os_name, arch = host_platform()
    plat = target.platform or f"{os_name}/{arch}"
    parts = plat.split("/")
    return ImageConfigFile(
        architecture=parts[1] if len(parts) > 1 else arch,
        os=parts[0],
        config=target.config,
        diff_ids=tuple(layer.diff_id for layer in layers),
        history=tuple(history),
        created=created,
        variant=parts[2] if len(parts) > 2 else "",
        # MAINTAINER, else the base image's (BuildKit starts from the base's config)
        author=target.author or (base_image.config.author if base_image is not None else ""),
    ), list(layers)
