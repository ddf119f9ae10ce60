"""Image/CompressedImage <-> numpy, for the project's own conversion and for cv_bridge.

Every test runs against both converters; the cv_bridge one skips where cv_bridge is not
importable (it comes with a full ROS install, not from PyPI). Expected values are built
independently with plain numpy byte manipulation, never with the code under test.
"""

from __future__ import annotations

import array
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from pebal_ros.conversions import (
    CAMERA_ENCODINGS,
    ENCODINGS,
    CvBridgeImageConverter,
    ImageConverter,
    ImageError,
    compressed_size,
    compressed_truncation,
    cv_bridge_available,
    make_converter,
)

RNG = np.random.default_rng(7)
H, W = 5, 7


@pytest.fixture(params=["numpy", "cv_bridge"])
def conv(request) -> ImageConverter:
    if request.param == "cv_bridge":
        if not cv_bridge_available():
            pytest.skip("cv_bridge is not importable here (it comes with a full ROS install, not from PyPI)")
        return CvBridgeImageConverter()
    return ImageConverter()


def _msg(encoding: str, payload: bytes, height: int, width: int, step: int, bigendian: int = 0) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian)
    data = array.array("B")
    data.frombytes(payload)
    msg.data = data
    return msg


def _padded(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Row bytes of a ``H x rowbytes`` uint8 array with ``pad`` garbage bytes after each row."""
    garbage = np.full((rows.shape[0], pad), 0xAB, dtype=np.uint8)
    return np.concatenate([rows, garbage], axis=1).tobytes(), rows.shape[1] + pad


def _random(encoding: str) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (H, W) if channels == 1 else (H, W, channels)
    if dtype == np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_roundtrip_every_encoding(conv, encoding):
    arr = _random(encoding)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.to_image(arr, encoding, header)
    itemsize = arr.dtype.itemsize
    channels = ENCODINGS[encoding][1]
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * channels * itemsize and len(msg.data) == msg.step * H
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert msg.header.frame_id == "cam" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    assert bytes(msg.data) == np.ascontiguousarray(arr).tobytes()  # the exact bytes, native order
    back = conv.to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def _camera_payload(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The wire pixels of ``rgb`` in a camera encoding, built with numpy only."""
    alpha = np.full(rgb.shape[:2] + (1,), 200, dtype=np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "mono8": rgb[..., 0],
    }[encoding]


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", CAMERA_ENCODINGS)
def test_camera_encodings_to_rgb_with_and_without_row_padding(conv, encoding, pad):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    wire = np.ascontiguousarray(_camera_payload(rgb, encoding))
    payload, step = _padded(wire.reshape(H, -1), pad)
    out = conv.to_rgb(_msg(encoding, payload, H, W, step))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["16UC1", "mono16", "32FC1"])
@pytest.mark.parametrize("bigendian", [0, 1])
def test_multibyte_byte_order_and_padding(conv, encoding, bigendian):
    arr = _random(encoding)
    wire = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    payload, step = _padded(np.frombuffer(wire.tobytes(), np.uint8).reshape(H, -1), 8)
    out = conv.to_numpy(_msg(encoding, payload, H, W, step, bigendian))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_bigendian_flag_is_irrelevant_for_8bit(conv):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = conv.to_rgb(_msg("rgb8", rgb.tobytes(), H, W, W * 3, bigendian=1))
    np.testing.assert_array_equal(out, rgb)


def test_unknown_encoding_is_refused_with_the_accepted_list(conv):
    msg = _msg("bayer_rggb8", bytes(H * W), H, W, W)
    with pytest.raises(ImageError, match="bayer_rggb8") as e:
        conv.to_rgb(msg)
    assert e.value.kind == "unsupported_encoding"
    assert all(enc in str(e.value) for enc in CAMERA_ENCODINGS)


def test_non_camera_encoding_is_not_a_camera_image(conv):
    msg = conv.to_image(np.zeros((H, W), np.float32), "32FC1")
    with pytest.raises(ImageError) as e:
        conv.to_rgb(msg)
    assert e.value.kind == "unsupported_encoding"


@pytest.mark.parametrize(("height", "width"), [(0, W), (H, 0), (0, 0)])
def test_zero_size(conv, height, width):
    with pytest.raises(ImageError, match="zero size") as e:
        conv.to_rgb(_msg("rgb8", b"", height, width, width * 3))
    assert e.value.kind == "empty_image"


def test_data_shorter_than_step_times_height(conv):
    step = W * 3 + 4
    msg = _msg("rgb8", bytes(step * H - 1), H, W, step)
    with pytest.raises(ImageError, match=rf"{step * H - 1} bytes but step \* height = {step} \* {H}") as e:
        conv.to_rgb(msg)
    assert e.value.kind == "truncated_data"


@pytest.mark.parametrize(("encoding", "step"), [("rgb8", W * 3 - 1), ("16UC1", W * 2 + 1)])
def test_step_too_small_or_misaligned(conv, encoding, step):
    with pytest.raises(ImageError, match=f"step {step}") as e:
        conv.to_numpy(_msg(encoding, bytes(step * H), H, W, step))
    assert e.value.kind == "bad_step"


def test_too_large_is_refused_before_reading(conv):
    msg = _msg("mono8", b"", 3000, 3000, 3000)  # no data: the size check must come first
    with pytest.raises(ImageError, match="max_image_pixels") as e:
        conv.to_rgb(msg, max_pixels=1000 * 1000)
    assert e.value.kind == "too_large"


def test_to_image_checks_dtype_and_shape(conv):
    with pytest.raises(ValueError, match="rgb8"):
        conv.to_image(np.zeros((H, W), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="32FC1"):
        conv.to_image(np.zeros((H, W), np.float64), "32FC1")
    with pytest.raises(ValueError, match="yuv"):
        conv.to_image(np.zeros((H, W), np.uint8), "yuv422")


# ---------------------------------------------------------------------------- compressed
def _scene(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth image (JPEG reproduces it closely)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], axis=2).astype(np.uint8)


def test_png_roundtrip_is_exact_and_format_string_follows_image_transport(conv):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = conv.to_compressed(rgb, "png", Header(frame_id="cam"))
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(conv.compressed_to_rgb(msg), rgb)
    # independent decode of the same bytes
    ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ref, rgb)


def test_jpeg_roundtrip_is_close(conv):
    rgb = _scene()
    msg = conv.to_compressed(rgb, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = conv.compressed_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3.0


def test_grey_png_becomes_rgb(conv):
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    ok, enc = cv2.imencode(".png", grey)
    msg = CompressedImage(format="png")
    msg.data = array.array("B", enc.tobytes())
    np.testing.assert_array_equal(conv.compressed_to_rgb(msg), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_size_reads_headers(fmt):
    rgb = _scene(37, 53)
    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb)
    assert compressed_size(enc.tobytes()) == (37, 53)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xd8\xff\xe0" + bytes(RNG.integers(0, 256, 200, dtype=np.uint8)),  # JPEG magic, garbage after
        bytes(RNG.integers(0, 256, 200, dtype=np.uint8)),  # not an image at all
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 4,  # PNG signature, chunk missing
    ],
)
def test_corrupt_compressed_images(conv, payload):
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", payload)
    with pytest.raises(ImageError, match="corrupt|neither JPEG nor PNG") as e:
        conv.compressed_to_rgb(msg)
    assert e.value.kind == "decode_failed"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_compressed_image_refused(conv, fmt, keep):
    """A JPEG/PNG cut short is refused as its own kind (decoders would fill it with grey)."""
    rgb = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    raw = conv.to_compressed(rgb, fmt).data.tobytes()
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", raw[: int(len(raw) * keep)])
    assert compressed_size(msg.data) == (40, 60)  # the header is intact
    with pytest.raises(ImageError, match="truncated compressed image") as e:
        conv.compressed_to_rgb(msg)
    assert e.value.kind == "truncated_compressed"
    assert compressed_truncation(raw) is None  # the complete image passes
    # trailing zero padding after a complete JPEG (some drivers pad buffers) is accepted
    if fmt == "jpeg":
        padded = CompressedImage(format=fmt, data=array.array("B", raw + bytes(16)))
        assert conv.compressed_to_rgb(padded).shape == (40, 60, 3)


def _glued(raw: bytes, end: bytes, keep: float) -> bytes:
    return raw[: int(len(raw) * keep)] + end


def _png_chunks(raw: bytes) -> list[bytes]:
    out, i = [], 8
    while i < len(raw):
        length = int.from_bytes(raw[i : i + 4], "big")
        out.append(raw[i : i + 12 + length])
        i += 12 + length
    return out


def _multi_idat_png(rgb: np.ndarray, chunk: int = 4096) -> bytes:
    """A valid PNG of ``rgb`` whose DEFLATE data is split into ``chunk``-byte IDAT chunks (as
    libpng writers do), built with zlib: the cuts below can then fall on chunk boundaries."""
    import struct
    import zlib

    rows = b"".join(b"\x00" + row.tobytes() for row in rgb)  # filter type 0 per scanline
    data = zlib.compress(rows, 6)
    h, w = rgb.shape[:2]

    def chunk_of(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = chunk_of(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    idats = b"".join(chunk_of(b"IDAT", data[i : i + chunk]) for i in range(0, len(data), chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idats + chunk_of(b"IEND", b"")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_checks_agree_with_what_the_decoder_reads(conv, keep):
    """Trailing bytes after a complete image are ignored (OpenCV decodes the picture exactly), and
    part of an image with its end marker glued on is refused as truncated (OpenCV decodes it with a
    grey or repeated tail): the issue found both the other way round for JPEG."""
    rgb = cv2.GaussianBlur(RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    jpeg = conv.to_compressed(rgb, "jpeg").data.tobytes()
    png = _multi_idat_png(rgb)
    reference = {"jpeg": cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB), "png": rgb}
    for fmt, raw in (("jpeg", jpeg), ("png", png)):
        for tail in (
            b"trailing bytes \xff\xd8 \x00\x01",
            bytes(64),
            RNG.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        ):
            msg = CompressedImage(format=fmt, data=array.array("B", raw + tail))
            np.testing.assert_array_equal(conv.compressed_to_rgb(msg), reference[fmt])
    # a JPEG cut anywhere in its scan data with the end-of-image marker FF D9 glued on
    for end in (b"\xff\xd9", b"\x00\xff\xd9"):
        glued = _glued(jpeg, end, keep)
        grey = cv2.imdecode(np.frombuffer(glued, np.uint8), cv2.IMREAD_COLOR_RGB)
        assert grey is not None and grey.shape == rgb.shape, "OpenCV decodes it as a whole picture"
        msg = CompressedImage(format="jpeg", data=array.array("B", glued))
        with pytest.raises(ImageError, match="the JPEG data ends before the picture does") as e:
            conv.compressed_to_rgb(msg)
        assert e.value.kind == "truncated_compressed"
    # a PNG cut at a chunk boundary with its IEND chunk glued on: every chunk is whole
    chunks = _png_chunks(png)
    idats = [c for c in chunks if c[4:8] == b"IDAT"]
    assert len(idats) >= 4
    kept = [chunks[0], *idats[: max(1, int(len(idats) * keep))]]  # IHDR and the first IDATs
    assert len(kept) - 1 < len(idats)
    glued = png[:8] + b"".join(kept) + chunks[-1]
    assert compressed_truncation(glued) is None, "structurally whole: only the data stream is short"
    msg = CompressedImage(format="png", data=array.array("B", glued))
    with pytest.raises(ImageError, match="PNG image data stream ends before the picture does") as e:
        conv.compressed_to_rgb(msg)
    assert e.value.kind == "truncated_compressed"


def test_small_jpeg_claiming_a_huge_size_is_refused_without_decoding(conv):
    """A complete 16 x 16 JPEG whose frame header is patched to claim 3000 x 4000 (12 M pixels,
    under max_image_pixels): a baseline JPEG of that size needs >= 2 bits per 8 x 8 block =
    375 x 500 blocks * 2 / 8 = 46875 bytes; these ~700 bytes cannot hold it."""
    ok, enc = cv2.imencode(".jpg", _scene(16, 16))
    raw = bytearray(enc.tobytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = (3000).to_bytes(2, "big") + (4000).to_bytes(2, "big")
    assert len(raw) < 46875
    msg = CompressedImage(format="jpeg", data=array.array("B", bytes(raw)))
    with pytest.raises(ImageError, match="at least 46875 bytes") as e:
        conv.compressed_to_rgb(msg, max_pixels=4096 * 3072)
    assert e.value.kind == "truncated_compressed"
    # the bound is a true lower bound: the most compressible real 3000 x 4000 JPEG (flat grey,
    # optimised Huffman tables) is larger than it and passes
    ok, flat = cv2.imencode(".jpg", np.zeros((3000, 4000), np.uint8), [cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    assert len(flat) >= 46875 and compressed_truncation(flat.tobytes()) is None


def test_png_with_too_little_image_data_for_its_header_is_refused():
    """IHDR patched from 16 x 16 to 4000 x 4000 RGB: 4000 * (1 + 12000) raw bytes need at least
    48004000 // 1032 = 46515 bytes of DEFLATE data."""
    ok, enc = cv2.imencode(".png", _scene(16, 16))
    raw = bytearray(enc.tobytes())
    raw[16:24] = (4000).to_bytes(4, "big") + (4000).to_bytes(4, "big")
    assert "at least 46515 bytes" in compressed_truncation(bytes(raw))
    ok, flat = cv2.imencode(".png", np.zeros((4000, 4000, 3), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert len(flat) >= 46515 and compressed_truncation(flat.tobytes()) is None


def test_oversized_compressed_image_refused_from_its_header(conv):
    ok, enc = cv2.imencode(".jpg", _scene(16, 16))
    raw = bytearray(enc.tobytes())
    # patch the frame header (SOF0 = FFC0: length, precision, height, width) to claim 8000 x 8000
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = (8000).to_bytes(2, "big") + (8000).to_bytes(2, "big")
    assert compressed_size(bytes(raw)) == (8000, 8000)
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", bytes(raw))
    with pytest.raises(ImageError, match="8000 x 8000") as e:
        conv.compressed_to_rgb(msg, max_pixels=4096 * 4096)
    assert e.value.kind == "too_large"


def test_compressed_depth_and_empty_are_refused(conv):
    msg = CompressedImage(format="16UC1; compressedDepth png")
    msg.data = array.array("B", b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ImageError) as e:
        conv.compressed_to_rgb(msg)
    assert e.value.kind == "unsupported_format"
    with pytest.raises(ImageError) as e:
        conv.compressed_to_rgb(CompressedImage(format="jpeg"))
    assert e.value.kind == "empty_image"


def test_make_converter():
    assert make_converter("numpy").name == "numpy"
    assert make_converter("auto").name == ("cv_bridge" if cv_bridge_available() else "numpy")
    if not cv_bridge_available():
        with pytest.raises(ValueError, match="cv_bridge is not importable"):
            make_converter("cv_bridge")
    with pytest.raises(ValueError, match="auto, cv_bridge, numpy"):
        make_converter("magic")


def test_default_max_pixels_is_a_12_mp_camera(conv):
    """4096 x 3072 passes the size check (and fails later, on its missing data); the reported 6 KB
    JPEG whose header claims 4000 x 4000 (16 M pixels) is refused from its header by default."""
    with pytest.raises(ImageError) as e:
        conv.to_rgb(_msg("mono8", b"", 3072, 4096, 4096))
    assert e.value.kind == "truncated_data"
    with pytest.raises(ImageError) as e:
        conv.to_rgb(_msg("mono8", b"", 3073, 4096, 4096))
    assert e.value.kind == "too_large"
    ok, enc = cv2.imencode(".jpg", _scene(16, 16))
    raw = bytearray(enc.tobytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = (4000).to_bytes(2, "big") + (4000).to_bytes(2, "big")
    with pytest.raises(ImageError, match="4000 x 4000") as e:
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", bytes(raw))))
    assert e.value.kind == "too_large"
