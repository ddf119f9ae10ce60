"""Deployment artefacts: ONNX export (:mod:`.onnx`) and TensorRT engines (:mod:`.tensorrt`).

Importing this package imports neither ``onnx`` nor ``tensorrt``; each module loads its
toolkit only when a function that needs it runs.
"""
