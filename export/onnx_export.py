"""Framework models to ONNX bytes, with a dynamic batch axis."""

from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

import numpy as np

OPSET = 17
ML_OPSET = 3


def from_torch(module: Any, example: Any, input_name: str, output_names: Sequence[str]) -> bytes:
    """A torch module to ONNX. Uses the TorchScript exporter: it writes one self-contained file and handles
    LSTMs with a dynamic batch axis; the dynamo exporter gives the same numbers but slower and in two files."""
    import torch

    buf = io.BytesIO()
    axes = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, input_names=[input_name], output_names=list(output_names),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def from_sklearn(estimator: Any, n_features: int, input_name: str = "features") -> bytes:
    """A scikit-learn estimator to ONNX; classifiers return probabilities as a tensor, not a list of maps."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    model = to_onnx(estimator, initial_types=[(input_name, FloatTensorType([None, n_features]))],
                    target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET}, options=options)
    return model.SerializeToString()


def output_specs(onnx_bytes: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensor specs of an ONNX model, as metadata records (None for dynamic axes)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def spec(t: Any) -> dict[str, Any]:
        dtype = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(double)": "float64"}.get(t.type, t.type)
        return {"name": t.name, "dtype": dtype, "shape": [d if isinstance(d, int) else None for d in t.shape]}

    return [spec(t) for t in sess.get_inputs()], [spec(t) for t in sess.get_outputs()]


def as_float32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
