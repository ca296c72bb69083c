"""Built-in data generators for users without data of their own.

Each follows behaviour the DWCP documents describe, so a model trained on it learns something real about the
shape of the problem; the real data sets in ../shared/data measure how far that carries. All are seeded.
Each returns columns (field name -> array) in the documented CSV schema (docs/data.md).
"""

from __future__ import annotations

import numpy as np

# The vocabularies are the contracts' (re-exported here for the generators' users)
from dwcp_inference.contracts import CONSENSUS_TYPES, DWCP_MODES, LINK_TYPES, NETWORK_TIERS, RELIABILITY  # noqa: F401

CONSENSUS_ANOMALIES = ("network_congestion", "leader_election_storm", "queue_overflow", "byzantine")
RELIABILITY_FEATURES = RELIABILITY.numbers  # NodeMetrics' fields, in the contract's order


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) series: persistent noise, as link conditions are."""
    e = rng.normal(0.0, sigma, n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def network_samples(links: int = 6, days: int = 14, interval_s: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """NetworkSample rows of several links, oldest first per link.

    Available bandwidth is capacity minus cross traffic. Cross traffic follows a daily cycle (busy in business
    hours, quiet at night) that is lighter on weekends, plus persistent noise and occasional congestion events.
    Latency rises with utilisation (queueing), loss rises sharply once a link is congested, and jitter follows
    the latency's variability.
    """
    rng = np.random.default_rng(seed)
    steps = days * 86400 // interval_s
    start = np.datetime64("2026-01-05T00:00:00")  # a Monday
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "link_id", "timestamp", "bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms",
        "time_of_day", "day_of_week", "node_id", "peer_id")}
    for link in range(links):
        capacity = float(rng.choice([100.0, 400.0, 1000.0, 2500.0]) * rng.uniform(0.8, 1.2))
        base_rtt = float(rng.uniform(2.0, 80.0))
        t = np.arange(steps) * interval_s
        hours = (t / 3600.0) % 24
        day = (t // 86400 + 1) % 7  # 0 = Sunday; the series starts on a Monday
        weekend = (day == 0) | (day == 6)
        daily = np.exp(-0.5 * ((hours - 14.0) / 4.0) ** 2)  # peak mid-afternoon
        load = 0.15 + (0.55 - 0.25 * weekend) * daily + 0.08 * _ar1(rng, steps, 0.9, 0.35)
        events = np.convolve(rng.random(steps) < 0.004, np.ones(6), mode="same") > 0  # ~30 min congestion
        load = np.clip(load + 0.35 * events, 0.02, 0.97)
        bandwidth = capacity * (1.0 - load) * np.exp(rng.normal(0, 0.03, steps))
        queueing = base_rtt * 0.15 * load / (1.0 - load)
        latency = base_rtt + queueing + np.abs(rng.normal(0, 0.02 * base_rtt, steps))
        loss = np.clip(0.0005 + 0.05 / (1 + np.exp(-(load - 0.85) * 25)) + rng.normal(0, 2e-4, steps), 0, 1)
        jitter = 0.05 * base_rtt + 0.3 * queueing * np.abs(rng.normal(1.0, 0.3, steps))
        cols["link_id"].append(np.full(steps, link))
        cols["timestamp"].append(start + t.astype("timedelta64[s]"))
        cols["bandwidth_mbps"].append(bandwidth)
        cols["latency_ms"].append(latency)
        cols["packet_loss"].append(loss)
        cols["jitter_ms"].append(jitter)
        cols["time_of_day"].append(hours.astype(int))
        cols["day_of_week"].append(day.astype(int))
        cols["node_id"].append(np.full(steps, f"node-{link}"))
        cols["peer_id"].append(np.full(steps, f"peer-{link}"))
    return {k: np.concatenate(v) for k, v in cols.items()}


def node_metrics(nodes: int = 40, steps: int = 600, anomaly_rate: float = 0.05,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Node metric vectors with labelled incidents, time-major (row i*nodes+n is node n at step i).

    Incidents of three severities (minor, major, critical) and four causes (error burst, latency surge,
    resource exhaustion, network degradation) move the metrics their cause touches, more with severity.
    """
    rng = np.random.default_rng(seed)
    n = nodes * steps
    node = np.tile(np.arange(nodes), steps)
    step = np.repeat(np.arange(steps), nodes)
    cycle = np.sin(2 * np.pi * step / 288.0)  # a daily cycle at 5-minute steps
    base_lat = rng.uniform(10, 25, nodes)[node]
    m = {
        "error_rate": np.clip(rng.gamma(2.0, 0.002, n), 0, 1),
        "timeout_rate": np.clip(rng.gamma(2.0, 0.001, n), 0, 1),
        "latency_p50_ms": base_lat * (1 + 0.1 * cycle) * rng.lognormal(0, 0.08, n),
        "sla_violations": rng.poisson(0.2, n).astype(float),
        "connection_failures": rng.poisson(0.5, n).astype(float),
        "packet_loss_rate": np.clip(rng.gamma(1.5, 0.001, n), 0, 1),
        "cpu_usage": np.clip(0.35 + 0.15 * cycle + rng.normal(0, 0.06, n), 0, 1),
        "memory_usage": np.clip(rng.uniform(0.3, 0.6, nodes)[node] + rng.normal(0, 0.03, n), 0, 1),
        "disk_io_mbps": rng.lognormal(3.0, 0.4, n),
    }
    m["latency_p99_ms"] = m["latency_p50_ms"] * rng.uniform(2.0, 3.5, n)
    label = np.zeros(n, dtype=int)
    severity = np.zeros(n, dtype=int)
    # Incidents last 3-12 steps on one node; enough of them to reach the anomaly rate.
    while label.mean() < anomaly_rate:
        nd, s0, dur = rng.integers(nodes), rng.integers(steps), rng.integers(3, 13)
        sev = rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])
        rows = nd + nodes * np.arange(s0, min(steps, s0 + dur))
        k = {1: 1.5, 2: 2.5, 3: 4.0}[sev] * rng.uniform(0.8, 1.2)
        cause = rng.integers(4)
        if cause == 0:    # error burst
            m["error_rate"][rows] += 0.02 * k
            m["sla_violations"][rows] += rng.poisson(2 * k, rows.size)
        elif cause == 1:  # latency surge
            m["latency_p99_ms"][rows] *= 1 + 1.5 * k
            m["latency_p50_ms"][rows] *= 1 + 0.8 * k
            m["timeout_rate"][rows] += 0.005 * k
        elif cause == 2:  # resource exhaustion
            m["cpu_usage"][rows] = np.maximum(m["cpu_usage"][rows], rng.uniform(0.7, 0.8, rows.size) + 0.05 * k)
            m["memory_usage"][rows] = np.minimum(1.0, m["memory_usage"][rows] + 0.1 * k)
            m["disk_io_mbps"][rows] *= 1 + 0.8 * k
        else:             # network degradation
            m["packet_loss_rate"][rows] += 0.01 * k
            m["connection_failures"][rows] += rng.poisson(3 * k, rows.size)
        label[rows] = 1
        severity[rows] = np.maximum(severity[rows], sev)
    for key in ("error_rate", "timeout_rate", "packet_loss_rate"):
        m[key] = np.clip(m[key], 0, 1)
    out: dict[str, np.ndarray] = {"node_id": np.array([f"node-{i}" for i in node]), "step": step}
    out.update({k: m[k] for k in RELIABILITY_FEATURES})
    out["is_anomaly"] = label
    out["severity"] = severity
    return out


def consensus_windows(windows: int = 3000, window: int = 20, anomaly_rate: float = 0.3,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Windows of consensus metrics, [windows, window] per field, in time order, with a label per window.

    Normal behaviour depends on the deployment (tier, DWCP mode, consensus protocol). Anomalous windows hold an
    episode of one of four kinds, covering at least a third of the window: network congestion (all latency
    percentiles and the queue rise), a leader-election storm (leader changes, commits stall, tail latency
    jumps), queue overflow (queue depth and pending proposals pile up) or byzantine behaviour (commits drop
    and latency turns erratic while nodes stay active).
    """
    rng = np.random.default_rng(seed)
    shape = (windows, window)
    tier = rng.choice(NETWORK_TIERS, windows)
    mode = rng.choice(DWCP_MODES, windows)
    proto = rng.choice(CONSENSUS_TYPES, windows)
    tier_ms = np.select([tier == "tier1", tier == "tier2"], [2.0, 10.0], 40.0)
    mode_k = np.select([mode == "datacenter", mode == "hybrid"], [1.0, 1.8], 3.0)
    proto_k = np.select([proto == "raft", proto == "pbft"], [1.0, 1.6], 1.3)
    base = (tier_ms * mode_k * proto_k)[:, None] * np.exp(0.05 * rng.standard_normal(shape))
    active = rng.choice([3, 5, 7, 9], windows).astype(float)
    rate = rng.uniform(50, 500, windows)[:, None]
    c = {
        "queue_depth": rng.poisson(5, shape).astype(float),
        "proposals_pending": rng.poisson(3, shape).astype(float),
        "proposals_committed": rate * np.exp(0.05 * rng.standard_normal(shape)),
        "latency_p50_ms": base,
        "latency_p95_ms": base * rng.uniform(1.8, 2.2, shape),
        "latency_p99_ms": base * rng.uniform(2.6, 3.4, shape),
        "leader_changes": (rng.random(shape) < 0.01).astype(float),
        "quorum_size": np.repeat((active // 2 + 1)[:, None], window, 1),
        "active_nodes": np.repeat(active[:, None], window, 1),
    }
    label = (rng.random(windows) < anomaly_rate).astype(int)
    kind = np.where(label == 1, rng.integers(0, 4, windows), -1)
    for w in np.flatnonzero(label):
        length = rng.integers(window // 3, window + 1)
        s = slice(rng.integers(0, window - length + 1), None)
        s = slice(s.start, s.start + length)
        k = rng.uniform(2.0, 5.0)
        if kind[w] == 0:
            for p in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
                c[p][w, s] *= k
            c["queue_depth"][w, s] += rng.poisson(10 * k, length)
        elif kind[w] == 1:
            c["leader_changes"][w, s] += rng.poisson(1.5, length) + 1
            c["proposals_committed"][w, s] *= 0.2
            c["latency_p99_ms"][w, s] *= 2 * k
        elif kind[w] == 2:
            c["queue_depth"][w, s] += np.linspace(20, 200 * k, length)
            c["proposals_pending"][w, s] += np.linspace(10, 80 * k, length)
            c["latency_p95_ms"][w, s] *= 1 + k / 2
        else:
            c["proposals_committed"][w, s] *= rng.uniform(0.1, 0.5, length)
            c["latency_p50_ms"][w, s] *= rng.uniform(1.0, 2 * k, length)
            c["latency_p99_ms"][w, s] *= rng.uniform(1.0, 3 * k, length)
    c["network_tier"] = np.repeat(tier[:, None], window, 1)
    c["dwcp_mode"] = np.repeat(mode[:, None], window, 1)
    c["consensus_type"] = np.repeat(proto[:, None], window, 1)
    c["is_anomaly"] = label
    c["anomaly_kind"] = np.array([CONSENSUS_ANOMALIES[k] if k >= 0 else "" for k in kind])
    return c
