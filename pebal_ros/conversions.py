"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> numpy.

Two interchangeable converters share one validation front end:

* :class:`ImageConverter` — the project's own conversion (numpy + OpenCV): zero-copy views on
  the message buffer where the layout allows, one ``memcpy`` into the message when building;
* :class:`CvBridgeImageConverter` — ``cv_bridge`` (``CvBridge.imgmsg_to_cv2`` /
  ``cv2_to_imgmsg`` / ``compressed_imgmsg_to_cv2``), used when ``cv_bridge`` is importable
  (a full ROS install) and :func:`make_converter` is asked for ``auto`` or ``cv_bridge``.

Every message is checked before any byte is read (:func:`check_image`): the encoding must be
known, the size non-zero and at most ``max_pixels``, ``step`` at least ``width * channels *
bytes``, and ``data`` at least ``step * height`` bytes long. Violations raise :class:`ImageError`
whose ``kind`` names the problem (for counters) and whose message names the fix.

Layout conventions (sensor_msgs/Image): rows of ``step`` bytes, the first ``width * channels *
bytes`` of each row are pixels, the rest is padding; ``is_bigendian`` gives the byte order of
multi-byte channels (irrelevant for 8-bit encodings). Arrays returned are ``H x W`` (one channel)
or ``H x W x C`` in native byte order. Camera images for the network are RGB ``uint8 H x W x 3``
(:meth:`ImageConverter.to_rgb`).

CompressedImage: JPEG and PNG (recognised by their magic bytes; ``format`` follows the
``compressed_image_transport`` convention, e.g. ``"bgr8; jpeg compressed bgr8"``, or just
``"jpeg"``/``"png"``). The pixel size is read from the JPEG frame header / PNG ``IHDR`` chunk
before decoding, so an oversized image is refused without allocating it. A compressed image whose
data cannot hold the picture its header announces is refused before decoding as well (kind
``truncated_compressed``, see :func:`compressed_truncation`), which bounds what a few bytes can
cost. Whether the data really is complete is what the decoder finds: JPEG is decoded by
libjpeg-turbo in strict mode (:func:`decode_jpeg`), which refuses a picture whose compressed data
ends before its last block even when an end-of-image marker follows (OpenCV fills the rest with
grey and decodes it); anything after the end-of-image marker is ignored, as decoders do. A PNG that
libpng cannot decode is ``truncated_compressed`` when its image data stream is incomplete, else
``decode_failed``.
"""

from __future__ import annotations

import array
import sys
import zlib

import cv2
import numpy as np
import simplejpeg
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
"""Encodings this module converts: numpy dtype of one channel and the number of channels."""

CAMERA_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")
"""Encodings accepted as camera input by :meth:`ImageConverter.to_rgb`."""

_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}

DEFAULT_MAX_PIXELS = 4096 * 3072
"""Largest image (width * height) accepted unless the caller says otherwise: 12.6 M pixels, a 12 MP
4:3 sensor at full resolution, the largest frames real vehicle and machine-vision cameras send
(automotive cameras: 1-8 MP, e.g. Cityscapes' 2048 x 1024, 4K 3840 x 2160 = 8.3 MP). Larger frames
are far more likely a corrupt header than a camera, and one of them costs gigabytes to decode."""

NATIVE_BIGENDIAN = int(sys.byteorder == "big")


class ImageError(ValueError):
    """An image message that cannot be converted; ``kind`` is a short machine-readable category.

    Kinds: ``unsupported_encoding``, ``empty_image``, ``too_large``, ``bad_step``,
    ``truncated_data``, ``unsupported_format``, ``decode_failed``, ``truncated_compressed``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    """``ImageError`` ``empty_image`` or ``too_large`` for a ``width x height`` (pixels) ``what``."""
    if height == 0 or width == 0:
        raise ImageError("empty_image", f"{what} has zero size ({width} x {height} pixels)")
    if height * width > max_pixels:
        raise ImageError(
            "too_large",
            f"{what} of {width} x {height} = {width * height} pixels exceeds max_image_pixels = {max_pixels}; "
            "lower the camera resolution or raise the max_image_pixels parameter",
        )


def check_image(
    msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS, encodings: tuple[str, ...] | None = None
) -> tuple[np.dtype, int]:
    """Validate an Image's header fields against its buffer; returns ``(dtype, channels)``."""
    allowed = tuple(ENCODINGS) if encodings is None else encodings
    if msg.encoding not in allowed:
        raise ImageError(
            "unsupported_encoding",
            f"unsupported image encoding '{msg.encoding}'; accepted: {', '.join(allowed)} "
            "(publish one of these, e.g. convert Bayer or YUV images with image_proc first)",
        )
    dtype, channels = ENCODINGS[msg.encoding]
    height, width = int(msg.height), int(msg.width)
    _check_size(width, height, max_pixels, "image")
    row_bytes = width * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes or step % dtype.itemsize:
        raise ImageError(
            "bad_step",
            f"step {step} does not fit a {msg.encoding} row of {width} pixels ({row_bytes} bytes, "
            f"step must be at least that and a multiple of {dtype.itemsize})",
        )
    if len(msg.data) < step * height:
        raise ImageError(
            "truncated_data",
            f"image data has {len(msg.data)} bytes but step * height = {step} * {height} = {step * height} "
            "are required (truncated message or wrong step/height)",
        )
    return dtype, channels


def _sniff_codec(buf: np.ndarray) -> str | None:
    head = buf[:8].tobytes()
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_size(data: bytes | np.ndarray | array.array) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG frame header or PNG ``IHDR`` without decoding; None if unreadable."""
    buf = np.frombuffer(data, dtype=np.uint8)
    codec = _sniff_codec(buf)
    if codec == "png":
        raw = buf[:24].tobytes()
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            return None
        return int.from_bytes(raw[20:24], "big"), int.from_bytes(raw[16:20], "big")
    if codec != "jpeg":
        return None
    header = _jpeg_frame_header(memoryview(buf))
    return None if header is None else header[1:]


def _jpeg_frame_header(raw: bytes | memoryview) -> tuple[int, int, int] | None:
    """``(SOF marker, height, width)`` of the first JPEG frame header, or None if there is none."""
    i = 2
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before a frame header
            return None
        length = int.from_bytes(raw[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(raw):
                return None
            return marker, int.from_bytes(raw[i + 5 : i + 7], "big"), int.from_bytes(raw[i + 7 : i + 9], "big")
        i += 2 + length
    return None


def _check_compressed(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    fmt = msg.format
    if "compresseddepth" in fmt.replace(" ", "").lower():
        raise ImageError(
            "unsupported_format", f"compressed depth images (format '{fmt}') are not camera images; send RGB"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageError("empty_image", f"compressed image (format '{fmt}') has no data")
    if _sniff_codec(buf) is None:
        raise ImageError(
            "decode_failed",
            f"compressed image (format '{fmt}', {buf.size} bytes) is neither JPEG nor PNG data; "
            "only JPEG and PNG are decoded",
        )
    size = compressed_size(buf)
    if size is None:
        raise ImageError("decode_failed", f"corrupt compressed image (format '{fmt}'): no readable frame header")
    height, width = size
    _check_size(width, height, max_pixels, "compressed image")
    truncation = compressed_truncation(buf)
    if truncation:
        raise ImageError(
            "truncated_compressed",
            f"truncated compressed image (format '{fmt}', {width} x {height}): {truncation}; the message was "
            "cut short (check the camera driver and the transport's maximum message size)",
        )
    return buf


JPEG_MIN_BITS_PER_BLOCK = 2
"""A baseline/sequential JPEG codes each 8 x 8 luminance block with at least a DC difference and
an end-of-block code, each a Huffman code of at least one bit."""

DEFLATE_MAX_RATIO = 1032
"""DEFLATE's largest possible compression ratio (a 258-byte match coded in 2 bits, about 1032:1)."""

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


def compressed_truncation(data: bytes | np.ndarray | array.array) -> str | None:
    """Why JPEG/PNG ``data`` cannot be complete, or None when nothing shows it is cut short.

    Checked without decoding (a few header fields and the chunk/marker structure):

    * JPEG: a sequential (baseline) JPEG must hold at least :data:`JPEG_MIN_BITS_PER_BLOCK` bits
      per 8 x 8 luminance block of the size its frame header announces (progressive JPEGs can
      code whole runs of blocks in a few bits: no size bound). Whether the scan data is complete
      only decoding tells (:func:`decode_jpeg`).
    * PNG: the chunks (4-byte length, type, data, CRC) must fit in the data and end with ``IEND``;
      the ``IDAT`` bytes must be at least the raw scanlines' size / :data:`DEFLATE_MAX_RATIO`.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    codec = _sniff_codec(buf)
    if codec == "png":
        return _png_truncation(memoryview(buf))
    if codec != "jpeg":
        return None
    header = _jpeg_frame_header(memoryview(buf))
    if header is not None and header[0] in (0xC0, 0xC1):
        _, height, width = header
        blocks = -(-height // 8) * -(-width // 8)
        needed = blocks * JPEG_MIN_BITS_PER_BLOCK // 8
        if buf.size < needed:
            return (
                f"a sequential JPEG of {width} x {height} needs at least {needed} bytes of scan data "
                f"({blocks} blocks), the message holds {buf.size}"
            )
    return None


def _png_truncation(raw: memoryview) -> str | None:
    i, idat, ihdr = 8, 0, None
    while i + 8 <= len(raw):
        length = int.from_bytes(raw[i : i + 4], "big")
        kind = bytes(raw[i + 4 : i + 8])
        if i + 12 + length > len(raw):
            name = kind.decode("latin-1")
            return f"PNG chunk {name!r} of {length} bytes runs past the end of the data ({len(raw)} bytes)"
        if kind == b"IHDR":
            ihdr = raw[i + 8 : i + 8 + length]
        elif kind == b"IDAT":
            idat += length
        elif kind == b"IEND":
            break
        i += 12 + length
    else:
        return f"the PNG data ({len(raw)} bytes) ends before its IEND chunk"
    if ihdr is not None and len(ihdr) >= 10:
        width, height = int.from_bytes(ihdr[0:4], "big"), int.from_bytes(ihdr[4:8], "big")
        bits = ihdr[8] * _PNG_CHANNELS.get(ihdr[9], 1)
        scanlines = height * (1 + (width * bits + 7) // 8)
        needed = scanlines // DEFLATE_MAX_RATIO
        if idat < needed:
            return (
                f"a PNG of {width} x {height} needs at least {needed} bytes of image data "
                f"({scanlines} raw bytes at most {DEFLATE_MAX_RATIO}:1 compressed), the IDAT chunks hold {idat}"
            )
    return None


_JPEG_CUT_SHORT = ("Premature end of JPEG file", "premature end of data segment")
"""libjpeg's warnings for scan data that ends before the last block (strict mode raises them)."""


def decode_jpeg(buf: np.ndarray, fmt: str, check_only: bool = False) -> np.ndarray:
    """JPEG bytes -> RGB ``uint8 H x W x 3`` by libjpeg-turbo (``simplejpeg``) in strict mode: data
    that ends before the picture's last block (with or without an end-of-image marker glued on) is
    an :class:`ImageError` ``truncated_compressed``, any other libjpeg warning or error
    ``decode_failed``. ``check_only`` decodes at 1/8 scale (the full entropy decoding, an eighth of
    the pixels) for a caller that decodes the picture itself."""
    try:
        if check_only:
            return simplejpeg.decode_jpeg(buf, colorspace="RGB", strict=True, min_height=1, min_width=1)
        return simplejpeg.decode_jpeg(buf, colorspace="RGB", strict=True)
    except ValueError as e:
        if any(text in str(e) for text in _JPEG_CUT_SHORT):
            raise ImageError(
                "truncated_compressed",
                f"truncated compressed image (format '{fmt}', {buf.size} bytes): the JPEG data ends before the "
                f"picture does ({e}); the message was cut short (check the camera driver and the transport's "
                "maximum message size)",
            ) from e
        raise ImageError("decode_failed", f"corrupt compressed image (format '{fmt}', {buf.size} bytes): {e}") from e


def _png_data_incomplete(raw: memoryview) -> bool:
    """Whether a PNG's ``IDAT`` chunks hold a DEFLATE stream that stops before its end (the chunks
    themselves are whole: :func:`compressed_truncation` checked them). Inflates in 1 MiB steps,
    keeping nothing."""
    idat, i = [], 8
    while i + 8 <= len(raw):
        length = int.from_bytes(raw[i : i + 4], "big")
        if bytes(raw[i + 4 : i + 8]) == b"IDAT":
            idat.append(raw[i + 8 : i + 8 + length])
        i += 12 + length
    inflate, data = zlib.decompressobj(), b"".join(idat)
    try:
        while data and not inflate.eof:
            inflate.decompress(data, 1 << 20)
            data = inflate.unconsumed_tail
    except zlib.error:
        return False  # corrupt rather than cut short
    return not inflate.eof


def _decode_failed(msg: CompressedImage, buf: np.ndarray) -> ImageError:
    if _sniff_codec(buf) == "png" and _png_data_incomplete(memoryview(buf)):
        return ImageError(
            "truncated_compressed",
            f"truncated compressed image (format '{msg.format}', {buf.size} bytes): the PNG image data stream "
            "ends before the picture does (the chunks are whole: data was cut and the end glued on)",
        )
    return ImageError(
        "decode_failed", f"corrupt compressed image (format '{msg.format}', {buf.size} bytes): decoding failed"
    )


def _to_message_data(arr: np.ndarray) -> array.array:
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return data


class ImageConverter:
    """The project's own conversion (numpy + OpenCV); see the module docstring."""

    name = "numpy"

    # ---------------------------------------------------------------- Image -> numpy
    def to_numpy(self, msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The pixels as ``H x W`` or ``H x W x C`` in native byte order (a view on ``msg.data`` when possible)."""
        dtype, channels = check_image(msg, max_pixels)
        return self._decode_raw(msg, dtype, channels)

    def _decode_raw(self, msg: Image, dtype: np.dtype, channels: int) -> np.ndarray:
        height, width, step = int(msg.height), int(msg.width), int(msg.step)
        rows = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
        pixels = rows[:, : width * channels * dtype.itemsize]
        if dtype.itemsize > 1:
            wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
            pixels = pixels.view(wire)
            if not wire.isnative:
                pixels = pixels.astype(dtype)
        return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)

    def to_rgb(self, msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """A camera image (``CAMERA_ENCODINGS``) as contiguous RGB ``uint8 H x W x 3``."""
        dtype, channels = check_image(msg, max_pixels, CAMERA_ENCODINGS)
        pixels = self._decode_raw(msg, dtype, channels)
        code = _TO_RGB[msg.encoding]
        return np.ascontiguousarray(pixels) if code is None else cv2.cvtColor(pixels, code)

    # ---------------------------------------------------------------- CompressedImage -> numpy
    def compressed_to_rgb(self, msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """A JPEG/PNG CompressedImage as RGB ``uint8 H x W x 3`` (grey images are expanded, alpha dropped)."""
        buf = _check_compressed(msg, max_pixels)
        rgb = self._decode_compressed(msg, buf)
        if rgb is None or rgb.size == 0:
            raise _decode_failed(msg, buf)
        return rgb

    def _decode_compressed(self, msg: CompressedImage, buf: np.ndarray) -> np.ndarray | None:
        if _sniff_codec(buf) == "jpeg":
            return decode_jpeg(buf, msg.format)
        return cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)

    # ---------------------------------------------------------------- numpy -> messages
    def to_image(self, arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
        """An Image message holding ``arr`` (``H x W`` or ``H x W x C`` matching ``encoding``), no padding."""
        if encoding not in ENCODINGS:
            raise ValueError(f"cannot build an image with encoding '{encoding}'; known: {', '.join(ENCODINGS)}")
        dtype, channels = ENCODINGS[encoding]
        expected_ndim = 2 if channels == 1 else 3
        if arr.dtype != dtype or arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
            raise ValueError(
                f"{encoding} needs a {dtype} array of {'H x W' if channels == 1 else f'H x W x {channels}'}, "
                f"got {arr.dtype} {arr.shape}"
            )
        return self._encode_raw(arr, encoding, header)

    def _encode_raw(self, arr: np.ndarray, encoding: str, header: Header | None) -> Image:
        msg = Image()
        if header is not None:
            msg.header = header
        msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
        msg.encoding = encoding
        msg.is_bigendian = NATIVE_BIGENDIAN
        msg.step = int(arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1))
        msg.data = _to_message_data(arr)
        return msg

    def to_compressed(
        self, rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None, quality: int = 95
    ) -> CompressedImage:
        """RGB ``uint8 H x W x 3`` -> CompressedImage (``fmt`` ``jpeg`` or ``png``), format string as
        ``compressed_image_transport`` writes it (``"rgb8; jpeg compressed bgr8"``)."""
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"to_compressed needs an RGB uint8 H x W x 3 array, got {rgb.dtype} {rgb.shape}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
        ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
        msg = CompressedImage()
        if header is not None:
            msg.header = header
        msg.format = f"rgb8; {fmt} compressed bgr8"
        msg.data = _to_message_data(encoded)
        return msg


class CvBridgeImageConverter(ImageConverter):
    """The same interface on top of ``cv_bridge`` (after the same validation)."""

    name = "cv_bridge"

    def __init__(self) -> None:
        from cv_bridge import CvBridge

        self._bridge = CvBridge()

    def _decode_raw(self, msg: Image, dtype: np.dtype, channels: int) -> np.ndarray:
        try:
            return self._bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
        except Exception as e:  # CvBridgeError and numpy errors from inside cv_bridge
            raise ImageError("decode_failed", f"cv_bridge could not convert the {msg.encoding} image: {e}") from e

    def _decode_compressed(self, msg: CompressedImage, buf: np.ndarray) -> np.ndarray | None:
        if _sniff_codec(buf) == "jpeg":  # cv_bridge (OpenCV) decodes a cut-short JPEG as grey: check it first
            decode_jpeg(buf, msg.format, check_only=True)
        try:
            return self._bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as e:
            raise ImageError("decode_failed", f"cv_bridge could not decode the '{msg.format}' image: {e}") from e

    def _encode_raw(self, arr: np.ndarray, encoding: str, header: Header | None) -> Image:
        msg = self._bridge.cv2_to_imgmsg(np.ascontiguousarray(arr), encoding=encoding)
        if header is not None:
            msg.header = header
        return msg


def cv_bridge_available() -> bool:
    """Whether ``cv_bridge`` imports here (it comes with a full ROS install, not from PyPI)."""
    try:
        import cv_bridge  # noqa: F401
    except ImportError:
        return False
    return True


CONVERSION_METHODS = ("auto", "cv_bridge", "numpy")


def make_converter(method: str = "auto") -> ImageConverter:
    """``auto``: cv_bridge when importable, else numpy; ``cv_bridge``/``numpy``: that one (or an error)."""
    if method not in CONVERSION_METHODS:
        raise ValueError(f"image conversion must be one of {', '.join(CONVERSION_METHODS)}, got {method!r}")
    if method == "numpy" or (method == "auto" and not cv_bridge_available()):
        return ImageConverter()
    if not cv_bridge_available():
        raise ValueError(
            "image conversion 'cv_bridge' requested but cv_bridge is not importable; use 'auto' or 'numpy'"
        )
    return CvBridgeImageConverter()
