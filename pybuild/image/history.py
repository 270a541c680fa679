"""`pybuild history`: an image's history lines joined with the layers they made.

The config's history has one line per instruction; lines without `empty_layer` made the
layers, in order. Rows come newest first, as `docker history` shows them. SIZE is the
layer blob's size in the store (compressed; Docker shows the unpacked size, which would
mean reading every layer).
"""
from __future__ import annotations

from dataclasses import dataclass

from pybuild.image.store import StoredImage


@dataclass(frozen=True)
class HistoryRow:
    """One line of `pybuild history`: an image history entry and the layer it made, if any."""

    created: str | None
    created_by: str
    comment: str
    empty_layer: bool
    layer_digest: str | None   # the layer this line made (None for config-only lines)
    size: int                  # that layer's blob size, 0 for config-only lines


def image_history(image: StoredImage) -> list[HistoryRow]:
    layers = list(image.layers)
    rows: list[HistoryRow] = []
    for h in image.config.history:
        layer = None
        if not h.empty_layer and layers:
            layer = layers.pop(0)
        rows.append(HistoryRow(h.created, h.created_by, h.comment, h.empty_layer,
                               layer.digest if layer else None, layer.size if layer else 0))
    for layer in layers:  # layers no history line accounts for (some imported images)
        rows.append(HistoryRow(None, "", "", False, layer.digest, layer.size))
    rows.reverse()
    return rows
