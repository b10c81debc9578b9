"""inspectloop: serves the ONNX model beside this file with onnxruntime (Triton Python backend).

Same inputs, outputs, dims and data types as the ONNX Runtime backend entry of this model.
Requests batched by Triton's dynamic batcher are concatenated into one onnxruntime call.
Triton runs this file alone, in its own stub process: it imports nothing of inspectloop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # Triton's


class TritonPythonModel:
    """The model Triton's Python backend instantiates (its name is the backend's contract)."""

    session: ort.InferenceSession | None

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})

        def parameter(key: str, default: int) -> int:
            return int(parameters.get(key, {}).get("string_value", default))

        options = ort.SessionOptions()
        options.intra_op_num_threads = parameter("intra_op_thread_count", 1)
        options.inter_op_num_threads = parameter("inter_op_thread_count", 1)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = Path(__file__).with_name("model.onnx")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name: str = config["input"][0]["name"]
        self.output_names: list[str] = [output["name"] for output in config["output"]]
        available = {output.name for output in self.session.get_outputs()}
        missing = sorted(set(self.output_names) - available)
        if missing:
            raise pb_utils.TritonModelException(f"{path} lacks outputs {missing}")

    def execute(self, requests: list[Any]) -> list[Any]:
        assert self.session is not None, "execute before initialize"
        batches = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            for request in requests
        ]
        outputs = self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(np.concatenate(batches))}
        )
        responses = []
        start = 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start:stop], dtype=np.float32))
                for name, value in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses

    def finalize(self) -> None:
        self.session = None
