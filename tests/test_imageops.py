"""Tests for satgan.imageops: decoding, gray/no-data/entropy measures, normalization, grids."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from satgan import imageops as ops


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


uint8_hwc = arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3])))


@settings(max_examples=60, deadline=None)
@given(uint8_hwc)
def test_normalize_range_dtype_shape(arr):
    """normalize maps uint8 HWC to float CHW within [-1, 1]."""
    for dtype in (np.float16, np.float32):
        out = ops.normalize(arr, dtype)
        assert out.dtype == dtype and out.shape == (arr.shape[2], arr.shape[0], arr.shape[1])
        assert out.min() >= -1 and out.max() <= 1


@settings(max_examples=60, deadline=None)
@given(uint8_hwc, st.sampled_from([np.float16, np.float32]))
def test_normalize_denormalize_round_trip(arr, dtype):
    """denormalize(normalize(x)) returns x within one 8-bit level, for float16 and float32."""
    back = ops.denormalize(ops.normalize(arr, dtype))
    assert back.dtype == np.uint8 and back.shape == arr.shape
    assert np.abs(back.astype(int) - arr).max() <= 1


def test_normalize_endpoints():
    """0 maps to -1 and 255 to +1 exactly."""
    out = ops.normalize(np.array([[0, 255]], np.uint8))
    assert out.tolist() == [[[-1.0, 1.0]]]


def test_denormalize_batch_and_clip():
    """A float (N, C, H, W) batch becomes uint8 (N, H, W, C), out-of-range values clipped."""
    x = np.full((2, 3, 4, 5), 3.0, np.float32)
    out = ops.denormalize(x)
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.uint8 and out.max() == 255


def test_denormalize_rejects_uint8_with_clear_message():
    """Passing pixels where a tensor is expected names both the expectation and what arrived."""
    with pytest.raises(ValueError, match=r"expected float .*got uint8"):
        ops.denormalize(np.zeros((3, 4, 4), np.uint8))


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(2, 16), st.integers(2, 16))))
def test_stretch_to_uint8_is_uint8_and_monotonic(arr):
    """The 16-bit stretch gives uint8 of the same shape and preserves pixel order."""
    out = ops.stretch_to_uint8(arr)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    order = np.argsort(arr.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_stretch_uses_range_not_clipping():
    """A narrow 16-bit range (6000..11000) fills 0..255 instead of clipping to 255."""
    arr = np.linspace(6000, 11000, 256 * 256).reshape(256, 256).astype(np.uint16)
    out = ops.stretch_to_uint8(arr)
    assert out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155


def test_real_16bit_pan_is_scaled(odd_dir):
    """The real Landsat 16-bit pan tile decodes to a well-spread (H, W) uint8 image."""
    out = ops.to_uint8(ops.open_image((odd_dir / "landsat8_pan_0_u16.tif").read_bytes()))
    assert out.shape == (256, 256) and out.dtype == np.uint8 and out.std() > 20


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "YCbCr", "1", "I", "F"])
def test_every_mode_decodes_to_rgb(mode):
    """P/RGBA/LA/CMYK/YCbCr/1/I/F images all decode to uint8 (H, W, 3)."""
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8))
    img = base.convert(mode)
    data = _png(img, "TIFF" if mode in ("CMYK", "YCbCr", "I", "F") else "PNG")
    out = ops.decode_pixels(data, 3)
    assert out.shape == (9, 7, 3) and out.dtype == np.uint8


def test_transparent_pixels_become_black():
    """Alpha is composited on black so transparent areas count as no-data."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    out = ops.decode_pixels(_png(Image.fromarray(rgba, "RGBA")), 3)
    assert ops.nodata_fraction(out) == 0.5


def test_is_content_gray_by_content_and_mode():
    """R=G=B within tolerance is gray; a coloured tile is not; (H, W) is always gray."""
    gray = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    noisy = gray.copy()
    noisy[..., 0] = np.clip(noisy[..., 0].astype(int) + 3, 0, 255)
    colour = gray.copy()
    colour[..., 0] = 255
    assert ops.is_content_gray(noisy, tol=4) and not ops.is_content_gray(noisy, tol=2)
    assert not ops.is_content_gray(colour, tol=8)
    assert ops.is_content_gray(gray[:, :, 0], tol=0)


def test_real_rsscn7_tile_is_colour(rsscn7_files):
    """A real RSSCN7 tile is not mistaken for gray."""
    arr = ops.decode_pixels(rsscn7_files[0].read_bytes(), 3)
    assert not ops.is_content_gray(arr, tol=8)


def test_nodata_fraction_on_real_corner_tile(odd_dir):
    """The real no-data-corner Landsat tile is about 35% pure black."""
    arr = ops.decode_pixels((odd_dir / "landsat7_nodata_corner.png").read_bytes(), 3)
    assert 0.3 < ops.nodata_fraction(arr) < 0.4


@settings(max_examples=40, deadline=None)
@given(uint8_hwc)
def test_entropy_and_nodata_are_bounded(arr):
    """entropy is within 0..8 bits and nodata_fraction within 0..1 for any uint8 image."""
    assert 0.0 <= ops.entropy(arr) <= 8.0
    assert 0.0 <= ops.nodata_fraction(arr) <= 1.0


def test_blank_tile_has_zero_entropy_and_low_contrast():
    """A uniform tile has zero entropy and skimage calls it low contrast."""
    blank = np.full((16, 16, 3), 90, np.uint8)
    assert ops.entropy(blank) == 0.0 and ops.is_low_contrast(blank, 0.05)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 80), st.integers(8, 80), st.sampled_from([1, 3]), st.sampled_from([8, 16]))
def test_resize_center_crop_shape(h, w, c, size):
    """resize_center_crop always returns uint8 (size, size, C)."""
    out = ops.resize_center_crop(np.zeros((h, w, c), np.uint8), size)
    assert out.shape == (size, size, c) and out.dtype == np.uint8


def test_resize_area_averages():
    """Downscaling a fine checkerboard by 2 with the area filter averages to mid-grey."""
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)[:, :, None]
    out = ops.resize_center_crop(board, 16)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_save_grid_writes_png(tmp_path):
    """save_grid writes one PNG with nrow tiles per row from float (N, C, H, W)."""
    x = np.zeros((5, 3, 4, 4), np.float32)
    path = ops.save_grid(x, tmp_path / "g.png", nrow=2, padding=1)
    with Image.open(path) as im:
        assert im.size == (2 * 5 + 1, 3 * 5 + 1) and im.mode == "RGB"


def test_pixel_limit_is_scoped():
    """pixel_limit restores Pillow's global limit afterwards."""
    before = Image.MAX_IMAGE_PIXELS
    with ops.pixel_limit(10):
        assert Image.MAX_IMAGE_PIXELS == 10
    assert Image.MAX_IMAGE_PIXELS == before


def test_reduced_jpeg_decode_matches_full_decode_after_resize(rsscn7_files):
    """prepare's reduced-scale JPEG decode gives the same 64px tile as a full decode, within a few levels."""
    data = rsscn7_files[0].read_bytes()
    full = ops.resize_center_crop(ops.decode_pixels(data, 3), 64).astype(int)
    reduced = ops.decode_jpeg_reduced(data, 400, 400, 64)
    assert reduced.shape == (100, 100, 3)  # 1/4 scale: the smallest with a side >= 64
    fast = ops.resize_center_crop(reduced, 64).astype(int)
    assert np.abs(full - fast).mean() < 2.0


def test_reduced_jpeg_decode_rejects_non_jpeg_bytes():
    """Bytes OpenCV cannot decode raise ValueError naming what was expected."""
    with pytest.raises(ValueError, match="expected an RGB JPEG of 8x8"):
        ops.decode_jpeg_reduced(b"not a jpeg", 8, 8, 4)


def _tiff(arr: np.ndarray, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def test_stretch_flat_band_is_mid_grey_and_percentiles_apply():
    """The one stretch: a flat band is 128 (low contrast, not false no-data), and the percentiles argument is used."""
    assert np.all(ops.stretch_to_uint8(np.full((4, 4), 7000, np.uint16)) == 128)
    ramp = np.arange(100, dtype=np.uint16).reshape(10, 10)
    out = ops.stretch_to_uint8(ramp, (10.0, 90.0))
    assert out[0, 0] == 0 and out[-1, -1] == 255 and 0 < out[5, 0] < 255


def test_twelve_bit_colour_tiff_is_stretched_not_cut_to_the_high_byte():
    """12-bit RGB in a 16-bit TIFF decodes to well-spread colour (Pillow alone gives 0..15, i.e. near-black gray)."""
    rng = np.random.default_rng(0)
    rgb = np.stack([rng.integers(0, 4096, (64, 64)), rng.integers(0, 2048, (64, 64)), rng.integers(1024, 4096, (64, 64))],
                   axis=-1).astype(np.uint16)
    decoded = ops.decode(_tiff(rgb, photometric="rgb"))
    assert decoded.mode == "RGB;16" and decoded.stretched and decoded.pixels.shape == (64, 64, 3)
    expected = np.stack([ops.stretch_to_uint8(rgb[..., c]) for c in range(3)], axis=-1)
    assert np.array_equal(decoded.pixels, expected) and not ops.is_content_gray(decoded.pixels, 8)


def test_planar_rgb_tiff_decodes_like_contiguous():
    """A planar (separate) RGB TIFF, 8- or 16-bit, decodes to the same pixels as the contiguous one."""
    rng = np.random.default_rng(1)
    for dtype, top in ((np.uint8, 256), (np.uint16, 65536)):
        rgb = rng.integers(0, top, (40, 48, 3)).astype(dtype)
        contiguous = ops.decode(_tiff(rgb, photometric="rgb")).pixels
        planar = ops.decode(_tiff(np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")).pixels
        assert planar.shape == (40, 48, 3) and np.array_equal(planar, contiguous)


def test_tiff_stack_is_a_problem_but_overviews_are_not():
    """Several full-resolution pages (a band stack) are refused by structure; reduced-resolution pages are fine."""
    import tifffile

    stack = ops.identify(_tiff(np.zeros((5, 32, 32), np.uint8)))
    assert "5 full-resolution pages" in ops.tiff_problem(stack)
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        tw.write(np.zeros((64, 64, 3), np.uint8), photometric="rgb")
        tw.write(np.zeros((32, 32, 3), np.uint8), photometric="rgb", subfiletype=1)  # an overview
    assert ops.tiff_problem(ops.identify(buf.getvalue())) is None


def test_description_json_is_never_trusted():
    """A TIFF whose ImageDescription holds odd JSON (shape [400, 400, null]) is judged by its structure only."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, format="TIFF", tiffinfo={270: '{"shape":[400,400,null]}'})
    img = ops.identify(buf.getvalue())
    assert ops.tiff_problem(img) is None and ops.decode_image(img, buf.getvalue()).pixels.shape == (40, 40, 3)


def test_only_project_formats_are_opened(monkeypatch):
    """An EPS file named .png is refused without its plugin (and Ghostscript) ever being run."""
    from PIL import EpsImagePlugin, UnidentifiedImageError

    def never(self):  # noqa: ANN001
        raise AssertionError("the EPS plugin was run")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(UnidentifiedImageError):
        ops.identify(eps)
    with pytest.raises(UnidentifiedImageError):
        ops.decode_pixels(eps, 3)


@given(h=st.integers(1, 20), w1=st.integers(1, 20), w2=st.integers(1, 20), gap=st.integers(0, 10), c=st.sampled_from([None, 1, 3]))
@settings(max_examples=30, deadline=None)
def test_side_by_side_joins_two_images_with_a_gap(h, w1, w2, gap, c):
    """side_by_side: uint8 (H, W1 + gap + W2[, C]), left then a gap column of 255 then right, unchanged."""
    extra = () if c is None else (c,)
    left, right = np.zeros((h, w1, *extra), np.uint8), np.full((h, w2, *extra), 7, np.uint8)
    out = ops.side_by_side(left, right, gap)
    assert out.dtype == np.uint8 and out.shape == (h, w1 + gap + w2, *extra)
    assert (out[:, :w1] == 0).all() and (out[:, w1:w1 + gap] == 255).all() and (out[:, w1 + gap:] == 7).all()


def test_side_by_side_refuses_different_heights():
    """Images of different heights are refused with a message naming the shapes."""
    with pytest.raises(ValueError, match="side_by_side"):
        ops.side_by_side(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8), 2)


def _png16(rgb16: np.ndarray) -> bytes:
    """A 16-bit RGB(A) PNG of ``rgb16`` (H, W, 3|4) uint16, encoded by OpenCV (Pillow cannot write one)."""
    import cv2

    order = [2, 1, 0] + ([3] if rgb16.shape[2] == 4 else [])
    ok, buf = cv2.imencode(".png", rgb16[..., order])
    assert ok
    return buf.tobytes()


def test_16bit_rgb_png_keeps_its_low_bits():
    """12-bit colour in a 16-bit RGB PNG is stretched per band to full 8-bit range, not cut to its high byte."""
    from satgan.imageops import decode

    rng = np.random.default_rng(0)
    arr = np.stack([rng.integers(0, 4096, (32, 32)), rng.integers(1000, 2000, (32, 32)),
                    rng.integers(0, 300, (32, 32))], axis=-1).astype(np.uint16)
    d = decode(_png16(arr))
    assert d.mode == "RGB;16" and d.stretched and d.pixels.shape == (32, 32, 3)
    assert all(int(d.pixels[..., c].max()) == 255 and int(d.pixels[..., c].min()) == 0 for c in range(3))
    assert np.corrcoef(d.pixels[..., 0].ravel(), arr[..., 0].ravel())[0, 1] > 0.99  # the same picture, scaled


def test_16bit_rgba_png_composites_alpha_onto_black():
    """A 16-bit RGBA PNG's transparent pixels become black (no-data), as 8-bit RGBA ones do."""
    from satgan.imageops import decode

    arr = np.full((8, 8, 4), 60000, np.uint16)
    arr[..., 0] = np.arange(64, dtype=np.uint16).reshape(8, 8) * 900
    arr[:4, :, 3] = 0
    d = decode(_png16(arr))
    assert d.mode == "RGBA;16" and (d.pixels[:4] == 0).all() and d.pixels[4:, :, 0].max() == 255


@pytest.mark.parametrize("dtype, words", [("uint32", "32-bit unsigned integer"), ("float32", "32-bit floating-point"),
                                          ("float64", "64-bit floating-point"), ("int16", "16-bit signed integer")])
def test_unsupported_tiff_samples_get_their_reason(dtype, words):
    """An RGB TIFF of uint32/float/int16 samples is refused naming its sample type, not "cannot identify"."""
    import tifffile
    from PIL import UnidentifiedImageError

    from satgan.imageops import decode

    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.random.default_rng(0).random((8, 8, 3)) * 4000).astype(dtype), photometric="rgb")
    with pytest.raises(UnidentifiedImageError, match=f"unsupported TIFF sample type: 3 sample\\(s\\) per pixel of {words}"):
        decode(buf.getvalue())
