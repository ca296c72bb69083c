"""Micro-batching, one piece: concurrent calls (raw columns) share one model call, a lone call is not held
back, a bad row fails only its own call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dwcp_inference.services.batching import BatchPolicy, MicroBatcher
from dwcp_inference.services.runtime import Computed


class SlowModel:
    """Doubles its input (its features: the input itself); takes `seconds` per call; refuses rows holding -1.
    Records each call's rows."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, columns: dict[str, np.ndarray]) -> Computed:
        x = columns["x"]
        with self.lock:
            self.calls.append(len(x))
        time.sleep(self.seconds)
        if np.any(x == -1):
            raise RuntimeError("onnxruntime: bad row")
        return Computed(x, {"y": x * 2, "n": np.arange(len(x))})


def test_a_lone_call_runs_at_once_alone():
    model, seen = SlowModel(), []
    # A 20 s wait for company: were it applied to a lone call, the call would take 20 s. Half of it is a margin
    # no loaded machine eats, so this asserts behaviour, not speed.
    batcher = MicroBatcher("m", model, BatchPolicy(64, 20_000_000, lambda m, rows, q: seen.append((rows, q))))
    started = time.perf_counter()
    out = batcher({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    assert time.perf_counter() - started < 10  # the wait applies only once calls queue
    assert out.outputs["y"].tolist() == [[2.0, 4.0]] and model.calls == [1]
    assert seen[0][0] == 1 and seen[0][1] < 10


def test_concurrent_calls_share_model_calls_and_get_their_own_rows():
    model = SlowModel(seconds=0.01)
    batcher = MicroBatcher("m", model, BatchPolicy(max_rows=16))
    inputs = [np.full((1 + i % 3, 2), float(i), dtype=np.float32) for i in range(40)]
    with ThreadPoolExecutor(40) as pool:
        outs = list(pool.map(lambda x: batcher({"x": x}), inputs))
    for x, out in zip(inputs, outs):  # each call its own rows of the features and of every output
        assert np.array_equal(out.outputs["y"], x * 2) and np.array_equal(out.features, x)
        assert out.outputs["n"].shape == (len(x),)
    assert sum(model.calls) == sum(len(x) for x in inputs)
    assert len(model.calls) < 20 and max(model.calls) <= 16  # gathered, and never above max_rows


def test_a_bad_row_fails_only_its_own_call():
    model = SlowModel(seconds=0.01)
    batcher = MicroBatcher("m", model, BatchPolicy(max_rows=64))
    inputs = [np.full((1, 2), -1.0 if i == 7 else float(i), dtype=np.float32) for i in range(20)]

    def call(x):
        try:
            return batcher({"x": x}).outputs["y"][0, 0]
        except RuntimeError as e:
            return str(e)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, inputs))
    assert results[7] == "onnxruntime: bad row"
    assert [r for i, r in enumerate(results) if i != 7] == [2.0 * i for i in range(20) if i != 7]


def test_windows_of_other_shapes_are_not_merged():
    model = SlowModel(seconds=0.005)
    batcher = MicroBatcher("m", model, BatchPolicy(max_rows=64))
    inputs = [np.zeros((1, 3 if i % 2 else 5, 2), dtype=np.float32) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(lambda x: batcher({"x": x}), inputs))
    assert [o.outputs["y"].shape for o in outs] == [x.shape for x in inputs]


@pytest.mark.parametrize("wait_us", [0, 2000])
def test_a_queue_is_never_left_waiting(wait_us):
    model = SlowModel(seconds=0.001)
    batcher = MicroBatcher("m", model, BatchPolicy(max_rows=8, max_wait_us=wait_us))
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda x: batcher({"x": x}), [np.ones((1, 1), dtype=np.float32)] * 300))
    assert len(outs) == 300 and sum(model.calls) == 300
