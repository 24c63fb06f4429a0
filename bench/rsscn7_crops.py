"""Real 128x128 JPEG crops of the RSSCN7 images in ../shared/data/rsscn7, for the data-stage benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RSSCN7 = REPO.parent / "shared" / "data" / "rsscn7"
TILE, STRIDE = 128, 24  # 12 x 12 = 144 overlapping crops per 400x400 image, 40,320 in all


def cut_crops(folder: Path, n: int) -> list[tuple[Path, str]]:
    """Write ``n`` crops as folder/000000.jpg ...; return (path, origin ``image@XxY``) per crop.

    Round-robin over the images, so any prefix mixes all 7 scene classes. Exits with one line
    when the images are missing or give fewer than ``n`` crops.
    """
    sources = sorted(RSSCN7.rglob("*.jpg"))
    if not sources:
        sys.exit(f"no RSSCN7 images under {RSSCN7} (see ../shared/data/README.md)")
    folder.mkdir(parents=True)
    crops: list[tuple[Path, str]] = []
    for offset_y in range(0, 400 - TILE + 1, STRIDE):
        for offset_x in range(0, 400 - TILE + 1, STRIDE):
            for src in sources:
                if len(crops) == n:
                    return crops
                with Image.open(src) as im:
                    crop = im.crop((offset_x, offset_y, offset_x + TILE, offset_y + TILE))
                path = folder / f"{len(crops):06d}.jpg"
                crop.save(path, quality=90)
                crops.append((path, f"{src.name}@{offset_x}x{offset_y}"))
    if len(crops) < n:
        sys.exit(f"only {len(crops)} crops available, asked for {n}")
    return crops
