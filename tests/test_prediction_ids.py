"""Prediction ids signed per batch (services/prediction_ids.py): the id format is unchanged (an id made before
batch signing still opens), the batch bodies are the per-item bodies, and the native MAC (Rust, keyed BLAKE2b) is
hashlib's."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import shutil
import struct

import numpy as np
import pytest

from dwcp_inference.services import decode
from dwcp_inference.services.prediction_ids import CODECS, MODELS, Choices, Signer, bodies

KEY = b"test-key-of-thirty-two-bytes-000"
MADE_AT = 1_764_570_000
# Made by the per-item signer this change replaced (prediction_ids.py before batch signing), with KEY at MADE_AT.
EARLIER_IDS = {
    ("bandwidth_predictor", "1", 480.25): "AQCQMy1pNjWNzdlksToBMQAg8ENU1CGka5_zGCxodMQVjvmN",
    ("compression_selector", "2024-05-01", ("zstd", 3)): "AQGQMy1pczXPqGoR_5EKMjAyNC0wNS0wMQIDADEOJDBZW3gViNEv1-hA2r8",
    ("reliability_detector", "3", True): "AQKQMy1p3ExGBZkjH2YBMwGdlJF4XEmtsGCufOf10Qez",
    ("consensus_latency", "1", False): "AQOQMy1pJe6p1XUo8asBMQCJ9vU9qgg6ihcaRFdQBa3b",
}


@pytest.fixture(scope="module")
def native():
    module = decode.native_module()
    if module is None:
        if shutil.which("cargo") is None:
            pytest.skip("no cargo on this machine: the native extension cannot be built (pip install ./native)")
        pytest.fail("dwcp_inference_native is not installed: `make setup` builds it (pip install ./native)")
    return module


def test_an_id_made_before_batch_signing_still_opens():
    signer = Signer(KEY)
    for (model, version, predicted), prediction_id in EARLIER_IDS.items():
        p = signer.open(prediction_id)
        assert (p.model, p.version, p.predicted, p.made_at) == (model, version, predicted, MADE_AT)


def test_the_same_prediction_and_nonce_make_the_earlier_id(native):
    """Batch signing, in Python and in Rust, makes exactly the earlier id from the same inputs."""
    signer = Signer(KEY)
    for (model, version, predicted), prediction_id in EARLIER_IDS.items():
        nonce = signer.open(prediction_id).nonce
        for module in (None, native):
            assert signer.sign_many(model, version, [predicted], MADE_AT, nonces=nonce, native=module) == [
                prediction_id]


def _per_item_body(model: str, version: str, predicted, made_at: int, nonce: bytes) -> bytes:
    """The body as the per-item signer packed it."""
    code = MODELS.index(model)
    value = (struct.pack("<f", predicted) if code == 0 else
             struct.pack("<Bh", CODECS.index(predicted[0]), predicted[1]) if code == 1 else
             struct.pack("<B", bool(predicted)))
    return struct.pack("<BBI8s", 1, code, made_at, nonce) + bytes((len(version.encode()),)) + version.encode() + value


def test_batch_bodies_are_the_per_item_bodies():
    rng = random.Random(5)
    for _ in range(200):
        model = rng.choice(MODELS)
        version = "".join(rng.choice("abcé1-.") for _ in range(rng.randrange(0, 40)))
        n = rng.randrange(1, 70)
        nonces = rng.randbytes(8 * n)
        if model == "bandwidth_predictor":
            predicted = [rng.choice((0.0, -0.0, 1e-40, 3.4e38, rng.uniform(-1e6, 1e6))) for _ in range(n)]
            arg = np.array(predicted)
        elif model == "compression_selector":
            predicted = [(rng.choice(CODECS), rng.randrange(-32768, 32768)) for _ in range(n)]
            arg = Choices(np.array([CODECS.index(c) for c, _ in predicted]), np.array([lv for _, lv in predicted]))
        else:
            predicted = [rng.random() < 0.5 for _ in range(n)]
            arg = np.array(predicted)
        made_at = rng.randrange(0, 1 << 32)
        rows = bodies(model, version, arg, made_at, nonces)
        assert [bytes(r) for r in rows] == [_per_item_body(model, version, p, made_at, nonces[8 * k:8 * k + 8])
                                            for k, p in enumerate(predicted)]


def test_what_the_per_item_signer_refused_is_still_refused():
    signer = Signer(KEY)
    with pytest.raises(OverflowError):  # a finite double beyond float32, as struct.pack("<f") refused it
        signer.sign_many("bandwidth_predictor", "1", np.array([1.0, 1e300]), MADE_AT)
    with pytest.raises(struct.error):
        signer.sign_many("compression_selector", "1", [("zstd", 40000)], MADE_AT)
    with pytest.raises(ValueError, match="too long for a prediction id"):
        signer.sign_many("consensus_latency", "v" * 256, [True], MADE_AT)


def test_the_native_mac_is_hashlibs_keyed_blake2b(native):
    rng = random.Random(11)
    for _ in range(3000):
        key, data = rng.randbytes(rng.randrange(16, 65)), rng.randbytes(rng.randrange(0, 600))
        assert native.mac(key, data) == hashlib.blake2b(data, key=key, digest_size=16).digest()


def test_native_and_python_signing_make_the_same_ids(native):
    rng = random.Random(12)
    for _ in range(300):
        signer = Signer(rng.randbytes(rng.randrange(16, 65)))
        n = rng.randrange(1, 130)
        version = "".join(rng.choice("xyz0123-ü") for _ in range(rng.randrange(0, 255 // 2)))
        predicted = np.array([rng.uniform(0, 1e4) for _ in range(n)])
        nonces = rng.randbytes(8 * n)
        ids = signer.sign_many("bandwidth_predictor", version, predicted, MADE_AT, nonces=nonces, native=native)
        assert ids == signer.sign_many("bandwidth_predictor", version, predicted, MADE_AT, nonces=nonces)
        assert all(base64.urlsafe_b64decode(i + "=" * (-len(i) % 4)) for i in ids)
        assert [signer.open(i).predicted for i in ids] == predicted.astype(np.float32).tolist()


def test_one_value_is_packed_as_a_batch_packs_it():
    """A single call's float (struct) gives the bytes, and the refusal, of the batch path (numpy) for that value."""
    from dwcp_inference.services.prediction_ids import _values

    rng = random.Random(13)
    values = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e-46, 1e-40, 3.4028235e38, 3.4028236e38,
              3.5e38, -1e300, 1e300] + [rng.uniform(-1e6, 1e6) for _ in range(500)]
    for v in values:
        try:
            want = _values(0, np.array([v, 0.0]))[:1].tobytes()
        except OverflowError as e:
            with pytest.raises(OverflowError, match=str(e)):
                _values(0, np.array([v]))
            continue
        got = _values(0, np.array([v]))
        assert (got.dtype, got.shape, got.tobytes()) == (np.uint8, (1, 4), want), v


def test_one_choice_is_packed_as_a_batch_packs_it():
    """A single call's codec and level (struct) give the bytes of the batch path (numpy), and its refusal."""
    from dwcp_inference.services.prediction_ids import _values

    for codec in range(len(CODECS)):
        for level in (-32769, -32768, -1, 0, 1, 3, 22, 32767, 32768):
            one = Choices(np.array([codec]), np.array([level]))
            two = Choices(np.array([codec, 0]), np.array([level, 0]))
            try:
                want = _values(1, two)[:1].tobytes()
            except struct.error as e:
                with pytest.raises(struct.error, match=str(e)):
                    _values(1, one)
                continue
            got = _values(1, one)
            assert (got.dtype, got.shape, got.tobytes()) == (np.uint8, (1, 3), want), (codec, level)
