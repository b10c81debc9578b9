"""Trainer: the inspection model (``model``), loading simulator datasets (``data``) and a plain
torch training loop with inspection metrics (``fit``).

The torch module stays apart from the training loop and from serving code: the Ray Train loop and
the packaging (ONNX, Triton) wrap these pieces, they do not live in them.
"""
