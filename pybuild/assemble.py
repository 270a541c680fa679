"""From a solved target to an image: config file (with history) and layer list.

Pure apart from reading the base image's config from the store: history lines come
from the base image, then one per instruction of the target; a line whose step added
no layer (config-only instructions, or a RUN that changed nothing) is `empty_layer`.
"""
from __future__ import annotations

import datetime as _dt
import os

from pybuild import graph


def created_timestamp(source_date_epoch: int | None = None) -> str:
    if source_date_epoch is not None:
        t = _dt.datetime.fromtimestamp(source_date_epoch, _dt.timezone.utc)
    else:
        t = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def host_platform() -> tuple[str, str]:
    # os.uname() is what platform.machine() reads on Linux, without importing `platform`
    # (~2 ms of every build's start-up)
    machine = os.uname().machine.lower()
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
    steps = []
    for step in target.history:
        state = states.get(step.op.digest) if step.op is not None else None
        added = state is not None and state.layer is not None
        steps.append((step, added, (state.created or created) if added else None))
    times = [created] * len(steps)
    if source_date_epoch is None:
        times = _step_times([t for _, _, t in steps], history) or times
        base_time = next((h.created for h in reversed(history) if h.created), None)
        created = times[-1] if times else (base_time or created)
    for (step, added, _), when in zip(steps, times):
        history.append(History(created=when, created_by=step.created_by,
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


def _step_times(layer_times: list, base_history: list) -> list:
    """History times of the target's steps without SOURCE_DATE_EPOCH, as BuildKit's
    exporter gives them: a step that added a layer has the time its layer was first made
    (kept in the step's cache record, so a cached rebuild repeats it); a step without one
    has the time of the layer step before it, or of the first one when none came before,
    or of the base image's last history line when the target added no layer at all. The
    image's `created` is the last of these: a rebuild from the cache is the same image."""
    first = next((t for t in layer_times if t), None)
    if first is None:
        first = next((h.created for h in reversed(base_history) if h.created), None)
    out, last = [], first
    for t in layer_times:
        last = t or last
        out.append(last)
    return out if all(out) else []
