"""msgpack encodings of the two protocols (see ../shared/peers/PROTOCOL.md). msgpack only: nothing is
ever unpickled, and only plain numeric dtypes decode.

openpi (`msgpack_numpy`): arrays are maps with *binary* keys b"__ndarray__", b"data", b"dtype", b"shape";
numpy scalars are b"__npgeneric__" maps; images are plain uint8 arrays.
vla-eval: arrays are maps with *string* keys "__ndarray__", "data", "dtype", "shape"; every HWC uint8
array with 1, 3 or 4 channels travels as an image map {"__image__", "format": png|jpeg|raw, "data",
"shape"(, "dtype" for raw)}; messages are envelopes {type, payload, seq, timestamp}.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from lamp_bench.harness.remote.errors import RemoteProtocolError

OPENPI_REJECTED_KINDS = ("V", "O", "c")  # openpi refuses these on encode
VLA_EVAL_ALLOWED_KINDS = ("b", "i", "u", "f")  # vla-eval accepts only these on decode
IMAGE_FORMATS = ("png", "jpeg", "raw")
VLA_EVAL_TYPES = ("hello", "observation", "action", "episode_start", "episode_end", "error")
PROTOCOL_VERSION = 1


def _array_from_buffer(data: Any, dtype: Any, shape: Any, allowed_kinds: tuple[str, ...]) -> np.ndarray:
    """A read-only array over `data`, after checking dtype kind and that the bytes match the shape."""
    try:
        dtype = np.dtype(dtype if isinstance(dtype, str) else bytes(dtype).decode())
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as error:
        raise RemoteProtocolError(f"bad array header (dtype {dtype!r}, shape {shape!r}): {error}") from None
    if dtype.kind not in allowed_kinds or dtype.hasobject:
        raise RemoteProtocolError(f"array dtype {dtype.str} is not allowed (kinds {', '.join(allowed_kinds)} only)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("array data is not a binary field")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if any(s < 0 for s in shape) or len(data) != expected:
        raise RemoteProtocolError(f"array data has {len(data)} bytes; dtype {dtype.str} x shape {shape} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# ------------------------------------------------------------------------------------------- openpi


def _openpi_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in OPENPI_REJECTED_KINDS:
        raise TypeError(f"openpi's encoding refuses dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__} for openpi")


def _openpi_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _array_from_buffer(obj.get(b"data"), obj.get(b"dtype"), obj.get(b"shape", ()), ("b", "i", "u", "f"))
    if b"__npgeneric__" in obj:
        dtype = _array_from_buffer(b"", obj.get(b"dtype"), (0,), ("b", "i", "u", "f")).dtype
        return dtype.type(obj.get(b"data"))
    return obj


def openpi_pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_openpi_default, use_bin_type=True)


def openpi_unpack(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise RemoteProtocolError(f"expected a binary msgpack frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_openpi_hook, raw=False)
    except RemoteProtocolError:
        raise
    except Exception as error:  # msgpack's ExtraData, FormatError, ValueError, ...
        raise RemoteProtocolError(f"frame is not valid msgpack: {type(error).__name__}: {error}") from None


# ------------------------------------------------------------------------------------------- vla-eval


def is_image_like(array: np.ndarray) -> bool:
    """vla-eval's rule: any HWC uint8 array with 1, 3 or 4 channels is sent as an image."""
    return array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (1, 3, 4)


def encode_image(array: np.ndarray, image_format: str) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    if image_format == "raw":
        return {"__image__": True, "format": "raw", "data": array.tobytes(), "dtype": array.dtype.str,
                "shape": list(array.shape)}
    from PIL import Image

    buffer = io.BytesIO()
    pixels = array[:, :, 0] if array.shape[2] == 1 else array
    if image_format == "jpeg":
        if array.shape[2] != 3:
            raise TypeError("jpeg images must be RGB")
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return {"__image__": True, "format": image_format, "data": buffer.getvalue(), "shape": list(array.shape)}


def decode_image(obj: dict) -> np.ndarray:
    image_format = obj.get("format")
    shape = obj.get("shape")
    if image_format not in IMAGE_FORMATS or not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise RemoteProtocolError(f"bad image map (format {image_format!r}, shape {shape!r})")
    if image_format == "raw":
        return _array_from_buffer(obj.get("data"), obj.get("dtype", "|u1"), shape, VLA_EVAL_ALLOWED_KINDS)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(obj.get("data") or b"")) as image:
            if image.width * image.height != int(shape[0]) * int(shape[1]):
                raise RemoteProtocolError(f"{image_format} image is {image.height}x{image.width}, shape says {shape}")
            array = np.asarray(image)
    except RemoteProtocolError:
        raise
    except Exception as error:  # PIL's UnidentifiedImageError, DecompressionBombError, truncated data
        raise RemoteProtocolError(f"cannot decode {image_format} image: {type(error).__name__}: {error}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if tuple(array.shape) != tuple(int(s) for s in shape):
        raise RemoteProtocolError(f"decoded image has shape {array.shape}, header says {tuple(shape)}")
    return array


def _vla_eval_default(image_format: str):
    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if is_image_like(obj):
                return encode_image(obj, image_format)
            if obj.dtype.kind not in VLA_EVAL_ALLOWED_KINDS:
                raise TypeError(f"vla-eval's encoding refuses dtype {obj.dtype}")
            return {"__ndarray__": True, "data": np.ascontiguousarray(obj).tobytes(), "dtype": obj.dtype.str,
                    "shape": list(obj.shape)}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot encode {type(obj).__name__} for vla-eval")

    return default


def _vla_eval_hook(obj: dict) -> Any:
    if obj.get("__image__") is True:  # images first, as vla-eval's decoder does
        return decode_image(obj)
    if obj.get("__ndarray__") is True:
        return _array_from_buffer(obj.get("data"), obj.get("dtype"), obj.get("shape", ()), VLA_EVAL_ALLOWED_KINDS)
    return obj


@dataclass
class Envelope:
    """One vla-eval message."""

    type: str
    payload: dict[str, Any]
    seq: int
    timestamp: float = 0.0


def pack_envelope(kind: str, payload: dict[str, Any], seq: int, image_format: str = "png") -> bytes:
    message = {"type": kind, "payload": payload, "seq": int(seq), "timestamp": time.time()}
    return msgpack.packb(message, default=_vla_eval_default(image_format), use_bin_type=True)


def unpack_envelope(data: Any) -> Envelope:
    """Decode and check one vla-eval frame: binary msgpack map with all four keys and a known type."""
    if not isinstance(data, (bytes, bytearray)):
        raise RemoteProtocolError(f"expected a binary msgpack frame, got {type(data).__name__}")
    try:
        message = msgpack.unpackb(data, object_hook=_vla_eval_hook, raw=False)
    except RemoteProtocolError:
        raise
    except Exception as error:
        raise RemoteProtocolError(f"frame is not valid msgpack: {type(error).__name__}: {error}") from None
    if not isinstance(message, dict):
        raise RemoteProtocolError(f"frame is a msgpack {type(message).__name__}, expected an envelope map")
    missing = [k for k in ("type", "payload", "seq", "timestamp") if k not in message]
    if missing:
        raise RemoteProtocolError(f"envelope lacks {', '.join(missing)}")
    if message["type"] not in VLA_EVAL_TYPES:
        raise RemoteProtocolError(f"unknown message type {message['type']!r}")
    if not isinstance(message["payload"], dict) or not isinstance(message["seq"], int):
        raise RemoteProtocolError("envelope payload must be a map and seq an integer")
    return Envelope(message["type"], message["payload"], message["seq"], float(message["timestamp"] or 0.0))
