"""The gRPC inference server: onnxruntime sessions over a model repository. Never imports training code."""
