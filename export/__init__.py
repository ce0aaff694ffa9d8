"""Export: training runs to ONNX (per fold, fold-ensemble, FP16, INT8) and TensorRT engines, with model.json."""
