"""Compression choices, a payload generator and the oracle that labels the best choice.

The oracle really compresses each payload chunk with every codec and level (so compression ratios are real) and
charges each codec its typical single-core speed from CODECS (so labels are reproducible on any machine). The
effective transfer time of a payload of S bytes at ratio r over a link is

    S / compress_speed  +  S * r * 8 / goodput  +  S / decompress_speed

where goodput is the link's throughput, capped by TCP's loss-limited rate (Mathis et al.) at its RTT and loss.
The label is the choice with the least time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .generators import LINK_TYPES


@dataclass(frozen=True)
class Codec:
    name: str            # the choice's name in metadata and the API: none, lz4, zstd
    level: int
    compress_mbs: float  # MB/s of original data, one core
    decompress_mbs: float


# Typical single-core speeds of the reference implementations on a server core (lz4 and zstd benchmarks).
CODECS = (
    Codec("none", 0, float("inf"), float("inf")),
    Codec("lz4", 0, 600.0, 3000.0),
    Codec("zstd", 1, 400.0, 1200.0),
    Codec("zstd", 3, 300.0, 1100.0),
    Codec("zstd", 9, 80.0, 1100.0),
    Codec("zstd", 19, 6.0, 900.0),
)
CHUNK = 64 * 1024

# Per link type: log-uniform ranges of throughput (Mbps), RTT (ms) and loss (fraction).
LINK_RANGES = {
    "dc": ((1000, 40000), (0.05, 1.0), (1e-7, 1e-5)),
    "metro": ((100, 10000), (1.0, 10.0), (1e-6, 1e-3)),
    "wan": ((10, 1000), (20.0, 200.0), (1e-5, 1e-2)),
    "edge": ((1, 100), (20.0, 300.0), (1e-4, 5e-2)),
}


def compressed_size(data: bytes, codec: Codec) -> int:
    import lz4.frame
    import zstandard

    if codec.name == "none":
        return len(data)
    if codec.name == "lz4":
        return len(lz4.frame.compress(data))
    return len(zstandard.ZstdCompressor(level=codec.level).compress(data))


def synthetic_chunks(count: int = 160, seed: int = 0) -> list[bytes]:
    """Payload chunks from incompressible to highly redundant: random bytes, text, JSON records, numeric
    tables, and mixtures of them."""
    rng = np.random.default_rng(seed)
    words = [bytes(rng.choice(list(b"abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9)).tolist()) for _ in range(400)]

    def text(n: int) -> bytes:
        out = b" ".join(words[i] for i in rng.zipf(1.3, n // 4) % len(words))
        return out[:n]

    def records(n: int) -> bytes:
        rows = [b'{"node":"n%d","bw":%.2f,"lat":%.1f,"ok":true}' % (rng.integers(50), rng.random() * 900,
                                                                       rng.random() * 80) for _ in range(n // 30)]
        return b"\n".join(rows)[:n]

    def table(n: int) -> bytes:
        return np.cumsum(rng.integers(-3, 4, n // 4)).astype(np.int32).tobytes()[:n]

    def noise(n: int) -> bytes:
        return rng.bytes(n)

    kinds = (text, records, table, noise)
    block = 1024
    chunks = []
    for i in range(count):
        # Blocks of two kinds interleaved, so any sample of the chunk looks like the whole of it.
        a, b = kinds[i % 4], kinds[rng.integers(4)]
        share = rng.uniform(0, 1) if i % 3 else 1.0
        parts = [a(block) if rng.random() < share else b(block) for _ in range(CHUNK // block)]
        chunks.append(b"".join(p.ljust(block, b"\0") for p in parts))
    return chunks


def chunk_ratios(chunks: list[bytes]) -> np.ndarray:
    """[chunks, codecs] compressed/original size, measured by compressing."""
    return np.array([[compressed_size(c, codec) / len(c) for codec in CODECS] for c in chunks])


def goodput_mbps(throughput_mbps: np.ndarray, rtt_ms: np.ndarray, loss: np.ndarray) -> np.ndarray:
    mathis = 1.22 * 1460 * 8 / (np.maximum(rtt_ms, 1e-3) / 1000.0 * np.sqrt(np.maximum(loss, 1e-9))) / 1e6
    return np.minimum(throughput_mbps, mathis)


def transfer_seconds(size_bytes: np.ndarray, ratios: np.ndarray, goodput: np.ndarray) -> np.ndarray:
    """[N, codecs] effective transfer time of each choice."""
    c = np.array([k.compress_mbs for k in CODECS]) * 1e6
    d = np.array([k.decompress_mbs for k in CODECS]) * 1e6
    s = size_bytes[:, None]
    return s / c + s * ratios * 8 / (goodput[:, None] * 1e6) + s / d


def random_links(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    link_type = rng.choice(LINK_TYPES, n)
    out = {"link_type": link_type}
    for i, key in enumerate(("throughput_mbps", "rtt_ms", "packet_loss")):
        lo = np.array([LINK_RANGES[t][i][0] for t in link_type])
        hi = np.array([LINK_RANGES[t][i][1] for t in link_type])
        out[key] = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return out


def measure(chunks: list[bytes], repeats: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Really compress and decompress every chunk with every codec on this machine: [chunks, codecs] of
    compressed/original size, compression seconds and decompression seconds (best of `repeats`)."""
    import time

    import lz4.frame
    import zstandard

    ratios = np.ones((len(chunks), len(CODECS)))
    comp = np.zeros_like(ratios)
    decomp = np.zeros_like(ratios)
    for j, codec in enumerate(CODECS):
        if codec.name == "none":
            continue
        if codec.name == "lz4":
            enc, dec = lz4.frame.compress, lz4.frame.decompress
        else:
            enc = zstandard.ZstdCompressor(level=codec.level).compress
            dec = zstandard.ZstdDecompressor().decompress
        for i, chunk in enumerate(chunks):
            best_c = best_d = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                packed = enc(chunk)
                t1 = time.perf_counter()
                dec(packed)
                t2 = time.perf_counter()
                best_c, best_d = min(best_c, t1 - t0), min(best_d, t2 - t1)
            ratios[i, j], comp[i, j], decomp[i, j] = len(packed) / len(chunk), best_c, best_d
    return ratios, comp, decomp


def corpus_chunks(files: list[tuple[str, bytes]], sizes: tuple[int, ...] = (4096, 16384, 65536)
                  ) -> tuple[list[bytes], list[str], np.ndarray]:
    """Consecutive chunks of each file at each size: (chunks, their file, their position in the file as a
    fraction 0..1, which splits a file into earlier parts for training and later ones for testing)."""
    chunks, names, position = [], [], []
    for name, data in files:
        for size in sizes:
            for start in range(0, len(data) - size + 1, size):
                chunks.append(data[start:start + size])
                names.append(name)
                position.append((start + size / 2) / len(data))
    return chunks, names, np.array(position)
