"""A small MLServer runtime serving an ONNX model through onnxruntime: the peer our server is measured against
(dwcp-inference bench --peers). Same session options as ours: one intra-op thread, no CPU arena."""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        self._session = ort.InferenceSession(self.settings.parameters.uri, opts,
                                             providers=["CPUExecutionProvider"])
        self._types = {i.name: i.type for i in self._session.get_inputs()}
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        feed = {n: x.astype(np.float32) if self._types.get(n) == "tensor(float)" else x for n, x in feed.items()}
        names = [o.name for o in self._session.get_outputs()]
        outputs = self._session.run(names, feed)
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(n, v) for n, v in zip(names, outputs)])
