"""Offline half of oegate: Outlier Exposure training, calibration, evaluation and ONNX export."""
