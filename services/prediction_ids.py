"""Prediction ids that carry what the outcome needs, signed: any replica or worker holding the key can judge an
outcome without having remembered the prediction.

An id is base64url (no padding) of

    format (1 byte, 1) | model (1 byte) | made at (uint32, unix seconds) | nonce (8 random bytes)
    | version (1 byte length + UTF-8) | predicted value | MAC (16 bytes)

or, for a call the candidate version shadowed (services/shadow.py: an outcome judges both versions), format 2 with
the candidate's version (1 byte length + UTF-8) after the answering version's. Format-1 ids still open.

where the predicted value is a float32 (bandwidth: Mbps), a codec (1 byte) and a level (int16) for the selector,
or one byte (the detectors' verdict), and the MAC is keyed BLAKE2b (digest_size 16) over all the bytes before it.
A bandwidth id of version "1" is 48 characters. blake2b costs 1.3 us per id here, HMAC-SHA256 2.3-3.0 us.

A batch is signed at once (one model, version and time): its predicted values are packed as one numpy array,
then each body is MACed and written out by the native extension when the caller passes it (`native`: keyed BLAKE2b
in Rust, no Python object per id but the id itself), else by hashlib, one id at a time. `bodies` gives a batch's
bodies as rows of one array.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dwcp_inference import MODEL_KINDS

log = logging.getLogger(__name__)

FORMAT = 1
FORMAT_SHADOWED = 2  # format 1 with the shadow's version after the version
MAC_BYTES = 16
MIN_KEY_BYTES = 16
MAX_ID_CHARS = 400
MODELS = MODEL_KINDS  # an id's model byte indexes it, and its codec byte CODECS: append to them, never reorder
CODECS = ("none", "lz4", "zstd", "brotli")
_HEAD = struct.Struct("<BBI8s")  # format, model, made at, nonce
_FLOAT, _CHOICE, _FLAG = struct.Struct("<f"), struct.Struct("<Bh"), struct.Struct("<B")


class OutcomeKeyError(ValueError):
    """The outcome key file cannot be used; the message says why."""


@dataclass(frozen=True)
class Prediction:
    model: str
    version: str
    predicted: Any  # a float, a (codec, level) tuple or a bool
    made_at: int  # unix seconds
    nonce: bytes
    shadow_version: str = ""  # format 2: the candidate that shadowed the call


def read_key(path: Path | str) -> bytes:
    """The key in a file: its bytes, surrounding whitespace ignored, at least MIN_KEY_BYTES of them."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise OutcomeKeyError(f"--outcome-key-file {path}: cannot read it: {e.strerror or e}") from None
    if len(key) < MIN_KEY_BYTES:
        raise OutcomeKeyError(f"--outcome-key-file {path}: the key is {len(key)} bytes, expected at least "
                        f"{MIN_KEY_BYTES} (e.g. head -c 32 /dev/urandom | base64 > FILE)")
    return key


def new_key() -> bytes:
    return secrets.token_bytes(32)


class Signer:
    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise OutcomeKeyError(f"outcome key: {len(key)} bytes, expected at least {MIN_KEY_BYTES}")
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=self._key, digest_size=MAC_BYTES).digest()

    def sign_many(self, model: str, version: str, predictions: Any, made_at: int, nonces: bytes | None = None,
                  native: Any = None, shadow_version: str = "") -> list[str]:
        """One id per prediction of a batch (one model version, one time). `predictions`: an array of floats
        (bandwidth), `Choices` or a sequence of (codec, level) pairs (selector), an array of verdicts (detectors).
        `nonces`: 8 bytes per prediction (random when not given); `native`: the extension, to MAC in Rust;
        `shadow_version`: the candidate that shadowed the call (format 2)."""
        head, tail, nonces, values = _parts(model, version, predictions, made_at, nonces, shadow_version)
        width, values = values.shape[1], values.tobytes()
        if native is not None:
            return native.sign_ids(self._key, head, tail, nonces, values, width)
        ids = []  # hashlib: one MAC per id, in Python (the native path has no loop)
        for k in range(len(nonces) // 8):
            body = head + nonces[8 * k:8 * k + 8] + tail + values[width * k:width * (k + 1)]
            ids.append(base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode())
        return ids

    def open(self, prediction_id: str) -> Prediction | None:
        """The prediction an id carries, or None when it is malformed, altered or signed with another key."""
        if not 0 < len(prediction_id) <= MAX_ID_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(prediction_id + "=" * (-len(prediction_id) % 4))
        except (ValueError, TypeError):
            return None
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(body) < _HEAD.size + 1 or not hmac.compare_digest(mac, self._mac(body)):
            return None
        fmt, code, made_at, nonce = _HEAD.unpack_from(body)
        if fmt not in (FORMAT, FORMAT_SHADOWED) or code >= len(MODELS):
            return None
        n = body[_HEAD.size]
        start = _HEAD.size + 1
        try:
            version = body[start:start + n].decode()
            shadow, start = "", start + n
            if fmt == FORMAT_SHADOWED:
                m = body[start]
                shadow, start = body[start + 1:start + 1 + m].decode(), start + 1 + m
                if not shadow:
                    return None
            predicted = _read(code, body[start:])
        except (UnicodeDecodeError, struct.error, IndexError):
            return None
        return Prediction(MODELS[code], version, predicted, made_at, nonce, shadow)


@dataclass(frozen=True)
class Choices:
    """The selector's chosen codec and level per item: `codec` [B] indexes CODECS, `level` [B]."""

    codec: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return len(self.codec)


def _parts(model: str, version: str, predictions: Any, made_at: int, nonces: bytes | None,
           shadow_version: str = "") -> tuple[bytes, bytes, bytes, np.ndarray]:
    """A batch's bodies in parts: the head common to all (format, model, made at), the tail (the version, length
    first, then in format 2 the shadow's version, length first), 8 bytes of nonce per prediction and the values
    [B, k] as bytes."""
    code = MODELS.index(model)
    name, shadow = version.encode(), shadow_version.encode()
    if len(name) > 255 or len(shadow) > 255:
        raise ValueError(f"version {version!r} or {shadow_version!r} is too long for a prediction id")
    values = _values(code, predictions)
    n = len(values)
    nonces = secrets.token_bytes(8 * n) if nonces is None else nonces  # one system call for the batch
    if len(nonces) != 8 * n:
        raise ValueError(f"nonces: {len(nonces)} bytes, expected 8 per prediction ({8 * n})")
    tail = bytes((len(name),)) + name + (bytes((len(shadow),)) + shadow if shadow else b"")
    return _HEAD.pack(FORMAT_SHADOWED if shadow else FORMAT, code, made_at, bytes(8))[:6], tail, nonces, values


def bodies(model: str, version: str, predictions: Any, made_at: int, nonces: bytes | None = None) -> np.ndarray:
    """Each prediction's id body, the bytes its MAC covers: rows of a [B, L] uint8 array."""
    head, tail, nonces, values = _parts(model, version, predictions, made_at, nonces)
    n = len(values)
    # every row: the head (its nonce zero), the version, the value; then each row's nonce and value in place
    row = np.frombuffer(head + bytes(8) + tail + bytes(values.shape[1]), np.uint8)
    out = np.tile(row, (n, 1))
    out[:, 6:_HEAD.size] = np.frombuffer(nonces, np.uint8).reshape(n, 8)
    out[:, len(row) - values.shape[1]:] = values
    return out


def _values(code: int, p: Any) -> np.ndarray:
    """The predicted values as [B, k] bytes, as struct packs them (and failing as it would)."""
    if code == 0:
        wide = np.asarray(p, dtype=np.float64).reshape(-1)
        if len(wide) == 1:  # one call: struct's float32 is the same C cast, with the same OverflowError
            return np.frombuffer(_FLOAT.pack(float(wide[0])), np.uint8).reshape(1, 4)
        with np.errstate(over="ignore"):
            narrow = wide.astype("<f4")
        if not np.isfinite(narrow).all() and (np.isinf(narrow) & np.isfinite(wide)).any():  # too large a double
            raise OverflowError("float too large to pack with f format")
        return narrow.view(np.uint8).reshape(-1, 4)
    if code == 1:
        if not isinstance(p, Choices):
            p = Choices(np.array([CODECS.index(c) for c, _ in p], dtype=np.int64),
                        np.array([level for _, level in p], dtype=np.int64))
        level = np.asarray(p.level, dtype=np.int64)
        if len(level) == 1 and -32768 <= level[0] <= 32767 and 0 <= p.codec[0] <= 255:  # one call: struct packs it
            return np.frombuffer(_CHOICE.pack(int(p.codec[0]), int(level[0])), np.uint8).reshape(1, 3)
        if ((level < -32768) | (level > 32767)).any():
            raise struct.error("'h' format requires -32768 <= number <= 32767")
        out = np.empty((len(level), 3), dtype=np.uint8)
        out[:, 0] = np.asarray(p.codec, dtype=np.uint8)
        out[:, 1:] = level.astype("<i2").view(np.uint8).reshape(-1, 2)
        return out
    return np.asarray(p, dtype=bool).reshape(-1, 1).view(np.uint8)


def _read(code: int, data: bytes) -> Any:
    if code == 0:
        return float(_FLOAT.unpack(data)[0])
    if code == 1:
        codec, level = _CHOICE.unpack(data)
        return CODECS[codec], level
    (flag,) = _FLAG.unpack(data)
    if flag > 1:
        raise struct.error("verdict byte")
    return bool(flag)
