"""Pure image operations shared by validate, prepare, train, generate and evaluate.

Every function here is free of I/O side effects except :func:`save_grid` (writes one PNG
atomically); decoding takes bytes, never a path. Arrays follow two layouts:

- *pixels*: ``uint8`` (H, W) or (H, W, C) with C in {1, 3}, values 0..255 (HWC, as images are);
- *tensors*: ``float16``/``float32`` (C, H, W) or (N, C, H, W), values in [-1, 1] (CHW, as torch wants).

Validate and prepare both decode through :func:`decode_image` (:func:`decode_pixels`), which
opens only :data:`FORMATS`, so a tile is converted the same way in both stages and prepare
needs no validate params: the output channel count (3, or 1 for a grayscale dataset) travels
in ``accepted.csv``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from satgan.fsutil import atomic_path

#: Modes Pillow uses for single-band images; these are grayscale whatever their content.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
#: High-bit-depth single-band modes, stretched to 8 bits by percentiles rather than clipped.
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
#: Percentiles for the 16-bit/float stretch: robust to a few hot or dead pixels, which a
#: plain min/max stretch would let squash the whole tile into a few grey levels.
STRETCH_PERCENTILES = (0.5, 99.5)
#: Share of pixels that must have channel spread <= tol for an RGB tile to count as gray;
#: not 100% because JPEG chroma noise puts a few coloured pixels into a gray image.
GRAY_PIXEL_SHARE = 0.99


def _expect_pixels(arr: Any, name: str) -> np.ndarray:
    """Check ``arr`` is uint8 (H, W) or (H, W, C<=4); errors say what was expected and what arrived."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a uint8 numpy array (H, W) or (H, W, C), got {type(arr).__name__}")
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name}: expected uint8 (H, W) or (H, W, 1|3|4), got {arr.dtype} {arr.shape}")
    return arr


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Scope Pillow's decompression-bomb limit to a block and restore the old value after.

    ``None`` means no limit (Pillow's own convention). Pillow keeps the limit in a module global; setting it permanently from library code would
    change behaviour for every other caller in the process.
    """
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


#: The formats a tile may be in: what the download stage recognises by signature. Pillow is asked
#: to try only these (``Image.open(formats=...)``), so an EPS, PDF or PSD file named ``.png`` is
#: never handed to a plugin that runs Ghostscript or parses formats nobody needs here.
FORMATS = ("PNG", "JPEG", "TIFF", "GIF", "WEBP")
#: What decoding untrusted bytes can raise, from Pillow's plugins or tifffile: each is a rejection
#: row in validate (a reason, never a crash) and one error line in prepare. Crafted headers and
#: tags reach code paths that raise more than OSError/ValueError (struct.error on short tag data,
#: TypeError and ZeroDivisionError on tags of the wrong type or value, MemoryError on sizes).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 ZeroDivisionError, OverflowError, MemoryError, RecursionError, NotImplementedError)
#: TIFF tags read here (TIFF 6.0): NewSubfileType, BitsPerSample, SamplesPerPixel.
_NEW_SUBFILE_TYPE, _BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL = 254, 258, 277
#: Pages scanned for a second full-resolution image: a stack is found on page 2, and the cap keeps
#: a crafted file with thousands of IFDs cheap.
_MAX_TIFF_PAGES = 64


def identify(data: bytes) -> Image.Image:
    """Open ``data`` lazily (header only) as one of :data:`FORMATS`; nothing is decoded yet.

    Raises ``UnidentifiedImageError`` for anything else, ``DecompressionBombError`` past Pillow's
    limit (see :func:`pixel_limit`) and other :data:`DECODE_ERRORS` on a broken header.
    """
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        why = _unreadable_tiff_reason(data)
        if why is None:
            raise
        raise UnidentifiedImageError(why) from None


def _unreadable_tiff_reason(data: bytes) -> str | None:
    """For a TIFF Pillow cannot open, what it holds (from tifffile's reading of its header); None if not a TIFF.

    Pillow has no mode for 32-bit integer, signed or floating-point colour samples, so it reports such a
    file as "cannot identify image file", which reads as a corrupt file; the reason names the samples.
    """
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    import tifffile

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            dtype, samples, shape = np.dtype(page.dtype), int(page.samplesperpixel), tuple(page.shape)
    except (tifffile.TiffFileError, *DECODE_ERRORS) as exc:
        return f"a TIFF that neither Pillow nor tifffile can read ({type(exc).__name__}: {exc})"
    kind = {"f": "floating-point", "i": "signed integer", "u": "unsigned integer"}.get(dtype.kind, dtype.kind)
    return (f"unsupported TIFF sample type: {samples} sample(s) per pixel of {dtype.itemsize * 8}-bit {kind} "
            f"(shape {list(shape)}); 8- or 16-bit unsigned samples are supported (convert it to 16-bit)")


def open_image(data: bytes) -> Image.Image:
    """Open and fully decode ``data`` (``load()``, not just ``verify()``) into a Pillow image.

    Only :data:`FORMATS` are tried. Raises whatever Pillow raises for bad input
    (``UnidentifiedImageError``, ``OSError`` for truncated files, ``DecompressionBombError``,
    ``ValueError``); callers turn those into rejection rows.
    """
    img = identify(data)
    img.load()
    return img


def stretch_to_uint8(arr: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """Scale a wide (uint16/int32/float) (H, W) band to uint8 (H, W) between two percentiles.

    Values are mapped linearly so the ``low`` percentile becomes 0 and the ``high`` one 255,
    clipping outside; NaN/inf are ignored when computing the percentiles (and NaN maps to 0).
    A flat band (or one without finite values) has no range to stretch and becomes mid-grey
    128: its low contrast is then what validate reports, not a false "no-data" black.
    """
    if arr.ndim != 2:
        raise ValueError(f"stretch_to_uint8: expected a (H, W) array, got shape {arr.shape}")
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"stretch_to_uint8: expected 0 <= low < high <= 100 percentiles, got {percentiles}")
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.full(arr.shape, 128, np.uint8)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    if hi <= lo:
        return np.full(arr.shape, 128, np.uint8)
    out = (np.nan_to_num(data, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _tag_ints(img: Image.Image, tag: int, default: int) -> tuple[int, ...]:
    """A TIFF tag's values as ints (``default`` when absent); ValueError when it holds anything else."""
    tags = getattr(img, "tag_v2", None)
    if tags is None or tag not in tags:
        return (default,)
    value = tags[tag]
    values = value if isinstance(value, tuple) else (value,)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"TIFF tag {tag} holds {value!r}, expected integers")
    return values


def tiff_problem(img: Image.Image) -> str | None:
    """Why a TIFF cannot be one tile (None when it can): more than 4 samples per pixel, or a stack.

    Decided from the TIFF's own structure, never from its free-text ImageDescription (tifffile's
    ``{"shape": ...}`` JSON there describes how an array was written, not what Pillow reads, and
    may hold anything). A stack is a file with more than one full-resolution page: tifffile
    writes a 7-band array as 256 pages of 256x7, which Pillow would read as one 7-pixel-wide
    image. Reduced-resolution pages (overviews of a cloud-optimised GeoTIFF) and masks are fine.
    """
    if img.format != "TIFF":
        return None
    samples = _tag_ints(img, _SAMPLES_PER_PIXEL, 1)[0]
    if samples > 4:
        return f"TIFF has {samples} samples per pixel; only 1-4 band images are supported"
    full = 1
    try:
        for page in range(1, _MAX_TIFF_PAGES):
            try:
                img.seek(page)
            except EOFError:
                break
            if _tag_ints(img, _NEW_SUBFILE_TYPE, 0)[0] & 0b101 == 0:  # bit 0: reduced, bit 2: mask
                full += 1
    finally:
        img.seek(0)
    if full > 1:
        return (f"TIFF holds {full}{'+' if full >= _MAX_TIFF_PAGES else ''} full-resolution pages of "
                f"{img.width}x{img.height} {img.mode} (a band or image stack{_described_shape(img)}); "
                "only single-image TIFFs (plus reduced-resolution overviews) are supported")
    return None


def _described_shape(img: Image.Image) -> str:
    """``", described as shape [...]"`` from tifffile's JSON ImageDescription, for the message only."""
    tags = getattr(img, "tag_v2", None)
    try:
        described = json.loads(str(tags[270])) if tags is not None and 270 in tags else None
    except (json.JSONDecodeError, RecursionError):
        return ""
    shape = described.get("shape") if isinstance(described, dict) else None
    if isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        return f", described as shape {shape}"
    return ""


def is_wide_colour_tiff(img: Image.Image) -> bool:
    """True for a TIFF with 2+ samples per pixel of more than 8 bits (16-bit RGB, 12-bit colour).

    Pillow has no 16-bit colour mode: it decodes these keeping only each sample's high byte, so
    12-bit data (0..4095) arrives as 0..15, dark and near-gray. :func:`decode_image` reads them
    with tifffile instead and stretches each band, as it does a 16-bit single band.
    """
    if img.format != "TIFF":
        return False
    return _tag_ints(img, _SAMPLES_PER_PIXEL, 1)[0] >= 2 and max(_tag_ints(img, _BITS_PER_SAMPLE, 1)) > 8


def _wide_tiff_pixels(data: bytes, width: int, height: int) -> tuple[np.ndarray, str]:
    """First image of a wide colour TIFF -> (uint8 (H, W, 3) or (H, W), a mode label like ``RGB;16``).

    Each colour band is stretched between :data:`STRETCH_PERCENTILES`; an alpha sample is
    composited onto black first (as Pillow's alpha modes are), so transparency stays no-data.
    Raises ValueError for layouts other than gray or RGB (+ alpha), or a codec tifffile lacks.
    """
    import lzma
    import zlib

    import tifffile  # imported lazily: only wide colour TIFFs need it

    # A broken file's problems become the rejection's reason; tifffile would also log each one.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr = page.asarray(maxworkers=1)
            axes, photometric, extra = page.axes, int(page.photometric), tuple(page.extrasamples)
    # KeyError: a codec that needs the imagecodecs package; zlib/lzma: corrupt compressed strips.
    except (tifffile.TiffFileError, zlib.error, lzma.LZMAError, *DECODE_ERRORS) as exc:
        raise ValueError(f"tifffile cannot decode it: {type(exc).__name__}: {exc}") from None
    if sorted(axes) != sorted("YXS"):
        raise ValueError(f"unsupported TIFF layout {axes} {arr.shape}")
    arr = arr.transpose([axes.index(a) for a in "YXS"])
    if arr.shape[:2] != (height, width):
        raise ValueError(f"tifffile reads {arr.shape[1]}x{arr.shape[0]}, Pillow {width}x{height}")
    colour = arr.shape[2] - len(extra)
    if not ((photometric == 2 and colour == 3) or (photometric in (0, 1) and colour == 1)) or len(extra) > 1:
        raise ValueError(f"unsupported TIFF: photometric {photometric} with {arr.shape[2]} samples ({len(extra)} extra)")
    top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    # unassociated alpha (2) is composited; associated (1) colour is premultiplied already
    pixels = _stretch_bands(arr, colour, colour if extra and extra[0] == 2 else None, top, invert=photometric == 0)
    kind = "F" if np.issubdtype(arr.dtype, np.floating) else ""
    label = f"{'RGB' if colour == 3 else 'L'}{'A' if extra else ''};{arr.dtype.itemsize * 8}{kind}"
    return (pixels if colour == 3 else pixels[:, :, 0]), label


@dataclass(frozen=True)
class Decoded:
    """A decoded tile: ``pixels`` uint8 (H, W) for gray or (H, W, 3); ``mode`` the source's mode
    (Pillow's, or e.g. ``RGB;16`` for a wide colour TIFF); ``stretched`` when wide samples were
    stretched to 8 bits by percentiles."""

    pixels: np.ndarray
    mode: str
    stretched: bool


def is_wide_colour_png(img: Image.Image, data: bytes) -> bool:
    """True for a PNG of 16-bit RGB or RGBA samples (IHDR bit depth 16, colour type 2 or 6).

    Pillow decodes these as 8-bit "RGB"/"RGBA" keeping each sample's high byte, so 12-bit imagery
    stored in 16 bits (0..4095) arrives as 0..15: dark, near-gray, and rejected as grayscale.
    """
    # PNG: 8-byte signature, then the IHDR chunk (length, "IHDR", width, height, bit depth, colour type).
    return img.format == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 6)


def _wide_png_pixels(data: bytes, width: int, height: int) -> tuple[np.ndarray, str]:
    """A 16-bit RGB(A) PNG -> (uint8 (H, W, 3) stretched per band as a wide TIFF is, a mode label ``RGB;16``).

    Decoded with OpenCV (installed with albumentations), which keeps the 16 bits Pillow drops.
    """
    import cv2  # imported lazily: only 16-bit colour PNGs need it

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError("OpenCV cannot decode this 16-bit colour PNG")
    if arr.shape[:2] != (height, width):
        raise ValueError(f"OpenCV reads {arr.shape[1]}x{arr.shape[0]}, Pillow {width}x{height}")
    rgb = arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]  # OpenCV's BGR(A) -> RGB(A)
    alpha = 3 if arr.shape[2] == 4 else None
    return _stretch_bands(rgb, 3, alpha, 65535.0, invert=False), "RGBA;16" if alpha is not None else "RGB;16"


def _stretch_bands(arr: np.ndarray, colour: int, alpha: int | None, top: float, invert: bool) -> np.ndarray:
    """Wide (H, W, S) samples -> uint8 (H, W, colour): alpha composited onto black, each band stretched."""
    a = None if alpha is None else np.clip(arr[..., alpha].astype(np.float64) / top, 0.0, 1.0)
    stretched = []
    for c in range(colour):  # one float64 band at a time bounds memory on large tiles
        band = arr[..., c].astype(np.float64)
        if invert:  # TIFF MinIsWhite: 0 is white
            band = top - band
        if a is not None:
            band *= a
        stretched.append(stretch_to_uint8(band))
    return np.stack(stretched, axis=-1)


def decode_image(img: Image.Image, data: bytes) -> Decoded:
    """Decode an :func:`identify`-ed image (``data`` its bytes) into 8-bit :class:`Decoded` pixels.

    The one decode rule of validate and prepare. Raises :data:`DECODE_ERRORS` on bad input
    (``OSError`` when the data is cut short).
    """
    if is_wide_colour_tiff(img):
        pixels, mode = _wide_tiff_pixels(data, img.width, img.height)
        return Decoded(pixels, mode, True)
    if is_wide_colour_png(img, data):
        pixels, mode = _wide_png_pixels(data, img.width, img.height)
        return Decoded(pixels, mode, True)
    img.load()
    return Decoded(to_uint8(img), img.mode, img.mode in WIDE_MODES)


def decode(data: bytes) -> Decoded:
    """Encoded file bytes -> :class:`Decoded` (see :func:`decode_image`)."""
    return decode_image(identify(data), data)


def _composite_on_black(img: Image.Image) -> Image.Image:
    # Transparent pixels carry no imagery: compositing them onto black makes them count as
    # no-data, which the no-data rule then measures, instead of showing arbitrary colours.
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def to_uint8(img: Image.Image) -> np.ndarray:
    """Any decoded Pillow image -> uint8 (H, W) for single-band modes or (H, W, 3) otherwise.

    16-bit/32-bit/float bands are stretched by percentiles (not clipped), palettes are expanded,
    alpha is composited onto black, CMYK/YCbCr/LAB/HSV are converted to RGB. (Wide *colour*
    TIFFs never get here: :func:`decode_image` reads them with tifffile.)
    """
    mode = img.mode
    if mode in WIDE_MODES:
        return stretch_to_uint8(np.asarray(img))
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "RGB"):
        return np.asarray(img)  # already the target layout: no convert() copy
    if mode in ("LA", "La"):
        return np.asarray(_composite_on_black(img).convert("L"))
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return np.asarray(_composite_on_black(img))
    return np.asarray(img.convert("RGB"))


def luminance(arr: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> uint8 (H, W) luma (ITU-R 601, as Pillow's ``convert("L")``)."""
    arr = _expect_pixels(arr, "luminance")
    if arr.ndim == 2:
        return arr
    if arr.shape[2] == 1:
        return arr[:, :, 0]
    rgb = arr[:, :, :3].astype(np.float32)
    y = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> uint8 (H, W, channels) with channels 1 (luma) or 3 (RGB)."""
    arr = _expect_pixels(arr, "to_channels")
    if channels == 1:
        return luminance(arr)[:, :, None]
    if channels != 3:
        raise ValueError(f"to_channels: expected channels 1 or 3, got {channels}")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return arr[:, :, :3]


def to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """Any decoded Pillow image -> uint8 (H, W, 3); grayscale is replicated to 3 channels."""
    return to_channels(to_uint8(img), 3)


def decode_pixels(data: bytes, channels: int) -> np.ndarray:
    """Encoded file bytes -> uint8 (H, W, channels): the one decode path of validate and prepare."""
    return to_channels(decode(data).pixels, channels)


def decode_jpeg_reduced(data: bytes, width: int, height: int, min_side: int) -> np.ndarray:
    """RGB JPEG bytes of a known ``width`` x ``height`` -> uint8 (h, w, 3), decoded at a reduced scale.

    libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 of full size by keeping only the low
    frequencies of each 8x8 block (an area average in effect). This picks the smallest scale whose
    shorter side is still >= ``min_side``, so a following area resize to ``min_side`` loses nothing,
    and decodes in OpenCV's C code: no per-tile Python header parsing as in Pillow. EXIF orientation
    is ignored, as Pillow ignores it, so both decoders give the same layout.
    Raises ValueError when the bytes do not decode.
    """
    import cv2

    factor = max((f for f in (2, 4, 8) if min(width, height) // f >= min_side), default=1)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.ndim != 3:
        raise ValueError(f"decode_jpeg_reduced: expected an RGB JPEG of {width}x{height}, OpenCV could not decode it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # contiguous, unlike a [..., ::-1] view


def is_content_gray(arr: np.ndarray, tol: int) -> bool:
    """True when uint8 ``arr`` is gray: (H, W)/(H, W, 1), or RGB with |R-G|,|G-B|,|R-B| <= ``tol``
    on at least :data:`GRAY_PIXEL_SHARE` of its pixels."""
    arr = _expect_pixels(arr, "is_content_gray")
    if arr.ndim == 2 or arr.shape[2] == 1:
        return True
    rgb = arr[:, :, :3]
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    return bool(np.mean(spread <= tol) >= GRAY_PIXEL_SHARE)


def nodata_fraction(arr: np.ndarray) -> float:
    """Fraction in [0, 1] of pixels of uint8 (H, W[, C]) ``arr`` that are pure black or pure white
    in every channel (the fill value of tile servers and of scene edges)."""
    arr = _expect_pixels(arr, "nodata_fraction")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    black = np.all(arr == 0, axis=2)
    white = np.all(arr == 255, axis=2)
    return float(np.mean(black | white))


def entropy(arr: np.ndarray) -> float:
    """Shannon entropy in bits (0..8) of the luminance histogram of uint8 (H, W[, C]) ``arr``."""
    counts = np.bincount(luminance(arr).ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


def is_low_contrast(arr: np.ndarray, fraction: float) -> bool:
    """skimage's ``exposure.is_low_contrast`` on the luminance of uint8 (H, W[, C]) ``arr``."""
    from skimage import exposure  # imported lazily: skimage costs seconds and most callers never need it

    return bool(exposure.is_low_contrast(luminance(arr), fraction_threshold=fraction))


def bright_fraction(arr: np.ndarray, threshold: int) -> float:
    """Fraction in [0, 1] of pixels whose luminance is >= ``threshold`` (a cloud/glare proxy)."""
    return float(np.mean(luminance(arr) >= threshold))


@functools.lru_cache(maxsize=8)
def _resize_crop_transform(size: int) -> Any:
    # albumentations takes seconds to import; only prepare pays for it, and once per size.
    import albumentations as A
    import cv2

    return A.Compose([
        # INTER_AREA averages source pixels when shrinking (no aliasing moire on roads/fields).
        A.SmallestMaxSize(max_size=size, interpolation=cv2.INTER_AREA),
        A.CenterCrop(height=size, width=size),
    ], is_check_shapes=False)  # one image, no masks/boxes to cross-check: skipping halves the per-call overhead


def resize_center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (size, size, C): shortest side to ``size`` (area filter), centre crop."""
    arr = _expect_pixels(arr, "resize_center_crop")
    if arr.ndim != 3:
        raise ValueError(f"resize_center_crop: expected (H, W, C), got shape {arr.shape}")
    out = _resize_crop_transform(size)(image=np.ascontiguousarray(arr))["image"]
    if out.ndim == 2:  # cv2 drops a trailing channel of 1; put it back so the layout is stable
        out = out[:, :, None]
    return out


def normalize(arr: np.ndarray, dtype: str | np.dtype = np.float32) -> np.ndarray:
    """uint8 (H, W, C) or (H, W) -> float (C, H, W) in [-1, 1]: ``x / 127.5 - 1`` (0 -> -1, 255 -> 1)."""
    arr = _expect_pixels(arr, "normalize")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    chw = np.transpose(arr, (2, 0, 1)).astype(np.float32)
    return (chw / np.float32(127.5) - np.float32(1.0)).astype(dtype)


def denormalize(x: Any) -> np.ndarray:
    """float [-1, 1] (C, H, W) -> uint8 (H, W, C), or (N, C, H, W) -> uint8 (N, H, W, C).

    Values outside [-1, 1] (a generator's overshoot) are clipped; accepts numpy arrays and
    anything ``np.asarray`` understands (a CPU torch tensor, a memmap).
    """
    arr = np.asarray(x)
    if arr.ndim not in (3, 4) or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"denormalize: expected float (C, H, W) or (N, C, H, W) in [-1, 1], got {arr.dtype} {arr.shape}")
    if arr.shape[-3] not in (1, 3):
        raise ValueError(f"denormalize: expected 1 or 3 channels at axis -3 (CHW), got shape {arr.shape}")
    scaled = (np.clip(arr.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5
    out = np.rint(scaled).astype(np.uint8)
    return np.moveaxis(out, -3, -1)


def make_grid(images: Any, nrow: int, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile images into one uint8 (H', W', C) grid with ``nrow`` images per row.

    ``images``: uint8 (N, H, W, C) / (N, H, W), or float (N, C, H, W) in [-1, 1] (denormalized
    first), or a sequence of same-shaped uint8 (H, W[, C]) arrays.
    """
    if nrow < 1:
        raise ValueError(f"make_grid: expected nrow >= 1, got {nrow}")
    if isinstance(images, Sequence) and not isinstance(images, np.ndarray):
        if not images:
            raise ValueError("make_grid: expected at least one image, got an empty sequence")
        images = np.stack([np.asarray(im) for im in images])
    arr = np.asarray(images)
    if np.issubdtype(arr.dtype, np.floating):
        arr = denormalize(arr)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or len(arr) == 0:
        raise ValueError(f"make_grid: expected uint8 (N, H, W[, C]) or float (N, C, H, W), got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = arr[..., None]
    n, h, w, c = arr.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        y = padding + (i // cols) * (h + padding)
        x = padding + (i % cols) * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int, gap_value: int = 255) -> np.ndarray:
    """Two uint8 images (H, W1[, C]) and (H, W2[, C]) of one height and channel count -> uint8 (H, W1 + gap + W2[, C]).

    A ``gap``-pixel column of ``gap_value`` separates them (two grids shown as one image).
    """
    if left.dtype != np.uint8 or right.dtype != np.uint8 or left.shape[0] != right.shape[0] \
            or left.shape[2:] != right.shape[2:] or left.ndim not in (2, 3) or gap < 0:
        raise ValueError(f"side_by_side: expected uint8 images of one height and channel count and gap >= 0, "
                         f"got {left.dtype} {left.shape}, {right.dtype} {right.shape}, gap {gap}")
    sep = np.full((left.shape[0], gap, *left.shape[2:]), gap_value, np.uint8)
    return np.concatenate([left, sep, right], axis=1)


def save_grid(images: Any, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Write ``images`` (see :func:`make_grid`) as one PNG grid at ``path``, atomically; returns the path."""
    grid = make_grid(images, nrow=nrow, padding=padding)
    pil = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    with atomic_path(path, suffix=".png") as tmp:
        # zlib level 1: grids are previews and plots, written on every run; level 6 (Pillow's
        # default) takes ~3x longer for files only ~10% smaller.
        pil.save(tmp, format="PNG", compress_level=1)
    return Path(path)
