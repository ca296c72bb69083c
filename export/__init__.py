"""Export: trained models to ONNX, proven equal to their framework, published into a model repository."""
