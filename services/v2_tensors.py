"""Open Inference Protocol (V2) tensors to numpy arrays and back: `contents` (one repeated field per datatype) or
`raw_input_contents` (little-endian, row-major; BYTES elements each a 4-byte little-endian length, then the bytes),
as the protocol defines them. Answers go out in the form the request came in: `raw_output_contents` for a request in
raw_input_contents (as Triton answers: tritonclient sends raw and reads numeric outputs only from there), `contents`
otherwise (readable in grpcurl; KServe's client reads either)."""

from __future__ import annotations

import math
import struct
from typing import Sequence

import numpy as np

from dwcp_inference.api import grpc_predict_v2_pb2 as v2

from .errors import InvalidInput, shown

MAX_RANK = 8  # dimensions of an input tensor (ours have 1 or 2); numpy holds at most 64


# datatype -> (numpy dtype of its raw form, its field in InferTensorContents)
DATATYPES = {
    "BOOL": ("?", "bool_contents"),
    "UINT8": ("<u1", "uint_contents"), "UINT16": ("<u2", "uint_contents"), "UINT32": ("<u4", "uint_contents"),
    "UINT64": ("<u8", "uint64_contents"),
    "INT8": ("<i1", "int_contents"), "INT16": ("<i2", "int_contents"), "INT32": ("<i4", "int_contents"),
    "INT64": ("<i8", "int64_contents"),
    "FP16": ("<f2", None), "FP32": ("<f4", "fp32_contents"), "FP64": ("<f8", "fp64_contents"),
    "BYTES": (None, "bytes_contents"),
}


def decode_inputs(request: v2.ModelInferRequest, max_batch: int) -> dict[str, np.ndarray]:
    """Each input tensor by name, shaped as declared (BYTES as an object array of bytes). The batch (the first
    dimension) is bounded before anything is decoded or built: a tensor with no elements costs no bytes, so
    [10**9, 0] would otherwise become a billion typed items."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents: expected one entry per input ({len(request.inputs)}), "
                           f"got {len(raw)}")
    tensors: dict[str, np.ndarray] = {}
    for k, t in enumerate(request.inputs):
        where = f"input {shown(t.name)}"
        if t.name in tensors:
            raise InvalidInput(f"{where}: given twice (inputs[{k}])")
        if t.datatype not in DATATYPES:
            raise InvalidInput(f"{where}: datatype {shown(t.datatype)} is not one of {list(DATATYPES)}")
        if len(t.shape) > MAX_RANK:
            raise InvalidInput(f"{where}: shape has {len(t.shape)} dimensions, expected at most {MAX_RANK}")
        shape = list(t.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"{where}: shape {shape} has a negative dimension")
        if shape and not 0 < shape[0] <= max_batch:
            raise InvalidInput(f"{where} (the first dimension): expected " + (
                "at least one item, got none" if shape[0] == 0 else f"at most {max_batch} items, got {shape[0]}"))
        count = math.prod(shape)
        dtype, field = DATATYPES[t.datatype]
        if raw:
            if t.HasField("contents"):
                raise InvalidInput(f"{where}: contents given beside raw_input_contents (use one or the other)")
            values = _from_raw(raw[k], dtype, count, where)
        elif field is None:
            raise InvalidInput(f"{where}: {t.datatype} travels only in raw_input_contents")
        else:
            items = getattr(t.contents, field)
            values = np.array(list(items), dtype=object) if dtype is None else np.asarray(items, dtype=dtype)
        if len(values) != count:
            raise InvalidInput(f"{where}: shape {shape} holds {count} elements, got {len(values)}"
                               + ("" if raw else f" in contents.{field} (where {t.datatype} travels)"))
        try:
            tensors[t.name] = values.reshape(shape)
        except ValueError:  # no elements, but a dimension too large for an array ([0, 2**62])
            raise InvalidInput(f"{where}: shape {shape} is too large") from None
    return tensors


def _from_raw(data: bytes, dtype: str | None, count: int, where: str) -> np.ndarray:
    if dtype is not None:
        size = np.dtype(dtype).itemsize
        if len(data) % size:
            raise InvalidInput(f"{where}: {len(data)} raw bytes is not a whole number of {size}-byte elements")
        return np.frombuffer(data, dtype=dtype)
    items, at = [], 0
    while at < len(data):
        if len(items) == count:
            raise InvalidInput(f"{where}: raw BYTES hold more than the shape's {count} elements")
        if at + 4 > len(data):
            raise InvalidInput(f"{where}: raw BYTES element {len(items)} is cut short (its 4-byte length)")
        (n,) = struct.unpack_from("<I", data, at)
        if at + 4 + n > len(data):
            raise InvalidInput(f"{where}: raw BYTES element {len(items)} says {n} bytes, {len(data) - at - 4} "
                               "remain")
        items.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return np.array(items, dtype=object)


def encode_output(name: str, datatype: str, values: Sequence | np.ndarray, response: v2.ModelInferResponse,
                  raw: bool) -> None:
    """Append one output tensor (shape from `values`) to `response`, its data in raw_output_contents (`raw`) or
    in its contents."""
    if datatype == "BYTES":
        array = np.asarray(values, dtype=object)
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
    else:
        array = np.asarray(values, dtype=DATATYPES[datatype][0])
    tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
    if not raw:
        items = flat if datatype == "BYTES" else array.reshape(-1).tolist()
        getattr(tensor.contents, DATATYPES[datatype][1]).extend(items)
    elif datatype == "BYTES":
        response.raw_output_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in flat))
    else:
        response.raw_output_contents.append(array.tobytes())
