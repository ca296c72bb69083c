"""Prediction ids that carry what the outcome needs, signed: any replica or worker holding the key can judge an
outcome without having remembered the prediction.

An id is base64url (no padding) of

    format (1 byte, 1) | model (1 byte) | made at (uint32, unix seconds) | nonce (8 random bytes)
    | version (1 byte length + UTF-8) | predicted value | MAC (16 bytes)

where the predicted value is a float32 (bandwidth: Mbps), a codec (1 byte) and a level (int16) for the selector,
or one byte (the detectors' verdict), and the MAC is keyed BLAKE2b (digest_size 16) over all the bytes before it.
A bandwidth id of version "1" is 48 characters. blake2b costs 1.3 us per id here, HMAC-SHA256 2.3-3.0 us.
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

from dwcp_inference import MODEL_KINDS

log = logging.getLogger(__name__)

FORMAT = 1
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

    def sign_many(self, model: str, version: str, predictions: Sequence[Any], made_at: int) -> list[str]:
        """One id per prediction of a batch (one model version, one time)."""
        code = MODELS.index(model)
        name = version.encode()
        if len(name) > 255:
            raise ValueError(f"version {version!r} is too long for a prediction id")
        tail = bytes((len(name),)) + name
        nonces = secrets.token_bytes(8 * len(predictions))  # one system call for the batch
        ids = []
        for k, p in enumerate(predictions):
            body = _HEAD.pack(FORMAT, code, made_at, nonces[8 * k:8 * k + 8]) + tail + _value(code, p)
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
        if fmt != FORMAT or code >= len(MODELS):
            return None
        n = body[_HEAD.size]
        start = _HEAD.size + 1
        try:
            version = body[start:start + n].decode()
            predicted = _read(code, body[start + n:])
        except (UnicodeDecodeError, struct.error, IndexError):
            return None
        return Prediction(MODELS[code], version, predicted, made_at, nonce)


def _value(code: int, p: Any) -> bytes:
    if code == 0:
        return _FLOAT.pack(p)
    if code == 1:
        return _CHOICE.pack(CODECS.index(p[0]), p[1])
    return _FLAG.pack(bool(p))


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
