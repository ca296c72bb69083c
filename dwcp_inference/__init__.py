"""DWCP inference suite: training jobs, ONNX export and a gRPC server for DWCP's four learned decisions.

Data flows one way: CSV or generator -> training -> export -> model repository -> server -> client.
`metadata` and `features` are the contract between export and the server; neither imports torch.
"""

__version__ = "0.1.0"

MODEL_KINDS = ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")
