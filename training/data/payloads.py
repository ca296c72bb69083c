"""Compression choices, a payload generator and the oracle that labels the best choice.

The oracle really compresses each payload chunk with every codec and level (so compression ratios are real) and
charges each codec its typical single-core speed from CODECS (so labels are reproducible on any machine). The
effective transfer time of a payload of S bytes at ratio r over a link is

    S / compress_speed  +  S * r * 8 / goodput  +  S / decompress_speed

where goodput is the link's throughput, capped by TCP's loss-limited rate (Mathis et al.) at its RTT and loss.
The label is the choice with the least time.

A real payload corpus (--format payloads) is timed instead: CPU time of each codec on each chunk, the least of
several runs, measured once per file and kept in a cache keyed by the file's sha256 (measure_files), so the
labels do not move with the machine's load and `train` and `evaluate` see the same ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

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
    from ..progress import bar

    return np.array([[compressed_size(c, codec) / len(c) for codec in CODECS]
                     for c in bar(chunks, total=len(chunks), desc="compressing chunks", unit="chunk")])


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


TIMING_REPEATS = 5


def measure(chunks: list[bytes], repeats: int = TIMING_REPEATS, desc: str = "timing codecs"
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Really compress and decompress every chunk with every codec on this machine: [chunks, codecs] of
    compressed/original size, compression seconds and decompression seconds.

    Times are CPU seconds of this thread (time.thread_time), the least of `repeats` runs: wall-clock time moves
    with whatever else the machine runs, so labels made from it would change between training and evaluation."""
    import time

    import lz4.frame
    import zstandard

    from ..progress import bar

    ratios = np.ones((len(chunks), len(CODECS)))
    comp = np.zeros_like(ratios)
    decomp = np.zeros_like(ratios)
    coders = []
    for codec in CODECS:
        if codec.name == "lz4":
            coders.append((lz4.frame.compress, lz4.frame.decompress))
        elif codec.name == "zstd":
            coders.append((zstandard.ZstdCompressor(level=codec.level).compress,
                           zstandard.ZstdDecompressor().decompress))
        else:
            coders.append(None)
    for i, chunk in enumerate(bar(chunks, total=len(chunks), desc=desc, unit="chunk")):
        for j, coder in enumerate(coders):
            if coder is None:
                continue
            enc, dec = coder
            best_c = best_d = float("inf")
            for _ in range(repeats):
                t0 = time.thread_time()
                packed = enc(chunk)
                t1 = time.thread_time()
                dec(packed)
                t2 = time.thread_time()
                best_c, best_d = min(best_c, t1 - t0), min(best_d, t2 - t1)
            ratios[i, j], comp[i, j], decomp[i, j] = len(packed) / len(chunk), best_c, best_d
    return ratios, comp, decomp


def cache_dir() -> Path:
    """Where measurements are kept: $DWCP_INFERENCE_CACHE, else $XDG_CACHE_HOME/dwcp-inference, else
    ~/.cache/dwcp-inference."""
    if os.environ.get("DWCP_INFERENCE_CACHE"):
        return Path(os.environ["DWCP_INFERENCE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dwcp-inference"


def _setup_key(sizes: tuple[int, ...], repeats: int) -> str:
    """What else the measurements of a file depend on: chunk sizes, codecs, repeats and library versions."""
    import lz4
    import zstandard

    setup = repr((sizes, CODECS, repeats, lz4.library_version_string(), zstandard.ZSTD_VERSION))
    return hashlib.sha256(setup.encode()).hexdigest()[:12]


def measure_files(files: list[tuple[str, bytes]], sizes: tuple[int, ...] = (4096, 16384, 65536),
                  repeats: int = TIMING_REPEATS) -> tuple[list[bytes], list[str], np.ndarray, np.ndarray,
                                                          np.ndarray, np.ndarray]:
    """corpus_chunks(files, sizes) and their measure(): each file is measured once and the figures stored under
    cache_dir(), keyed by the file's sha256, so training and `evaluate` label the same rows the same way.
    Returns (chunks, their file, their position, ratios, compression seconds, decompression seconds)."""
    key = _setup_key(sizes, repeats)
    store = cache_dir() / "compression-timings"
    chunks, names, position, figures = [], [], [], []
    for name, data in files:
        c, n, p = corpus_chunks([(name, data)], sizes)
        file = store / f"{hashlib.sha256(data).hexdigest()}-{key}.npz"
        try:
            with np.load(file) as f:
                measured = (f["ratios"], f["comp"], f["decomp"])
            if measured[0].shape != (len(c), len(CODECS)):
                raise ValueError("stale")
        except (OSError, ValueError, KeyError):
            measured = measure(c, repeats, desc=f"timing codecs on {name}")
            store.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, ratios=measured[0], comp=measured[1], decomp=measured[2])
            os.replace(tmp, file)  # atomic: a parallel run reads the whole file or none
        chunks += c
        names += n
        position.append(p)
        figures.append(measured)
    if not chunks:
        return [], [], np.zeros(0), *(np.zeros((0, len(CODECS))) for _ in range(3))
    return (chunks, names, np.concatenate(position), *(np.concatenate([f[k] for f in figures]) for k in range(3)))


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
