"""An uploaded image, decoded or refused with the HTTP status and one message that says why.

Every way an upload can be wrong is a ``BadUpload`` (a 4xx), checked before the expensive
step it protects: the byte count before reading on (413), the pixel count from the header
before decoding (a decompression bomb, 413), the decode itself (not an image, truncated: 400).
Decoded images become arrays exactly as `segtrain predict` reads files (``decode.image_array``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtrain.data.formats.decode import image_array

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_PIXELS = 40_000_000  # 40 MP: a 6000x6000 photo passes, a tiny PNG that inflates to gigabytes does not


class BadUpload(Exception):
    """A request the client must fix: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def too_large(size: int, limit: int) -> BadUpload:
    return BadUpload(413, f"upload is {size / 2**20:.1f} MB, over the server's limit of {limit / 2**20:.1f} MB "
                          "(segtrain serve --max-upload-mb); send a smaller image")


def decode_upload(data: bytes, channels: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The uploaded bytes as a uint8 (H, W, channels) image, or ``BadUpload``."""
    if not data:
        raise BadUpload(400, "the upload is empty; send an image file (PNG, JPEG, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # the header only
            if im.width * im.height > max_pixels:
                raise BadUpload(413, f"image is {im.width}x{im.height} pixels ({im.width * im.height / 1e6:.0f} MP), over the "
                                     f"server's limit of {max_pixels / 1e6:.0f} MP (a decompression bomb?); send a smaller image")
            im.load()
    except UnidentifiedImageError:
        raise BadUpload(400, "the upload is not an image Pillow can read; send a PNG, JPEG, BMP, TIFF or WebP file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadUpload(413, f"image refused as a decompression bomb ({err}); send a smaller image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadUpload(400, f"the image cannot be decoded ({' '.join(str(err).split())}); the file is corrupt or truncated") from None
    if im.width == 0 or im.height == 0:
        raise BadUpload(400, "the image has no pixels")
    return image_array(im, channels)
