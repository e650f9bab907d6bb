"""Export a trained run: an ONNX graph checked against PyTorch, or a self-contained
safetensors bundle that predict, sample and serve load without the run."""

from __future__ import annotations

from hone.export.bundle import export_bundle
from hone.export.onnx import DEFAULT_TOLERANCE, ExportReport, ParityCheck, export_onnx

__all__ = ["DEFAULT_TOLERANCE", "ExportReport", "ParityCheck", "export_bundle", "export_onnx"]
