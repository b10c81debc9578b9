"""Triton as a :class:`~inspectloop.inspection.scorer.Scorer`: inference, readiness and model
control, over gRPC (the gateway's scorer; the edge agent scores with ONNX Runtime instead).

Every failure to reach Triton or to get an answer becomes ``BackendUnavailableError`` (the API
answers 503 with the reason), except a load that Triton refuses: the model itself is broken,
and trying again cannot help (``PermanentError``). Readiness answers are cached for
``readiness_ttl_s`` so that routing can ask for every request without a round trip each time;
the class names and the input size of a model come from its served config (``config.pbtxt``,
written by the packaging).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.core.onnx_contract import (
    CLASSES_PARAMETER,
    INPUT_NAME,
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_FEATURES,
    OUTPUT_PROBABILITIES,
)
from inspectloop.inspection.scorer import Scores, ServedModel
from inspectloop.inspection.settings import TritonSettings

# gRPC codes of a Triton that could not be reached or did not answer in time: worth retrying.
# Any other code from a load means that Triton read the model and refused it.
UNREACHABLE = frozenset(
    f"StatusCode.{code}"
    for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED")
)


class TritonScorer:
    def __init__(
        self, settings: TritonSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._client = triton_grpc.InferenceServerClient(url=settings.url)
        self._clock = clock
        self._ready: dict[tuple[str, str], tuple[float, bool]] = {}
        self._served: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except InferenceServerException as exc:
            raise BackendUnavailableError(
                f"Triton at {self.settings.url} failed to {what}: {exc.message()}"
            ) from None

    def ready(self, name: str, version: str) -> bool:
        """Whether Triton serves ``name`` version ``version`` (cached ``readiness_ttl_s``)."""
        key, now = (name, version), self._clock()
        with self._lock:
            cached = self._ready.get(key)
        if cached is not None and now - cached[0] < self.settings.readiness_ttl_s:
            return cached[1]
        try:
            answer = bool(
                self._client.is_model_ready(name, version, client_timeout=self.settings.timeout_s)
            )
        except InferenceServerException:
            answer = False
        with self._lock:
            self._ready[key] = (now, answer)
        return answer

    def forget(self, name: str) -> None:
        """Drop what is cached about ``name`` (after a load or unload)."""
        with self._lock:
            self._ready = {k: v for k, v in self._ready.items() if k[0] != name}
            self._served.pop(name, None)

    def served(self, name: str, version: str = "") -> ServedModel:
        """Input size, classes and outputs of ``name``, from its config on Triton (one config
        serves every version of a model)."""
        with self._lock:
            known = self._served.get(name)
        if known is not None:
            return known
        config = self._call(
            f"give the config of {name}",
            lambda: self._client.get_model_config(
                name, as_json=True, client_timeout=self.settings.timeout_s
            ),
        )["config"]
        classes = config.get("parameters", {}).get(CLASSES_PARAMETER, {}).get("string_value")
        if not classes:
            raise BackendUnavailableError(
                f"model {name} on Triton has no {CLASSES_PARAMETER} parameter: it was not "
                "packaged by inspectloop"
            )
        dims = [int(d) for d in config["input"][0]["dims"]]
        outputs = {o["name"] for o in config.get("output", [])}
        model = ServedModel(
            input_size=dims[0],
            classes=tuple(classes.split(",")),
            anomaly=OUTPUT_ANOMALY_SCORE in outputs,
        )
        with self._lock:
            self._served[name] = model
        return model

    def score(self, name: str, version: str, images: npt.NDArray[np.uint8]) -> list[Scores]:
        """Probabilities, features and anomaly score of each image (``N x H x W x 3``)."""
        request = triton_grpc.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        request.set_data_from_numpy(images)
        wanted = [OUTPUT_PROBABILITIES, OUTPUT_FEATURES]
        if self.served(name, version).anomaly:
            wanted.append(OUTPUT_ANOMALY_SCORE)
        outputs = [triton_grpc.InferRequestedOutput(n) for n in wanted]
        started = time.perf_counter()
        result = self._call(
            f"run {name} v{version}",
            lambda: self._client.infer(
                name,
                [request],
                model_version=version,
                outputs=outputs,
                client_timeout=self.settings.timeout_s,
            ),
        )
        seconds = time.perf_counter() - started
        probabilities = result.as_numpy(OUTPUT_PROBABILITIES)
        features = result.as_numpy(OUTPUT_FEATURES)
        anomaly = (
            result.as_numpy(OUTPUT_ANOMALY_SCORE).reshape(-1)
            if OUTPUT_ANOMALY_SCORE in wanted
            else np.zeros(len(images), dtype=np.float32)
        )
        return [
            Scores(probabilities[i], features[i], float(anomaly[i]), seconds)
            for i in range(len(images))
        ]

    def load(self, name: str) -> None:
        """Ask Triton to (re)load ``name`` from its repository (every version its config's
        ``version_policy`` serves); the versions it served stay up if the load fails.
        Raises PermanentError when Triton refuses the model, BackendUnavailableError when it
        cannot be reached."""
        try:
            self._client.load_model(name)
        except InferenceServerException as exc:
            if exc.status() in UNREACHABLE:
                raise BackendUnavailableError(
                    f"Triton at {self.settings.url} failed to load {name}: {exc.message()}"
                ) from None
            raise PermanentError(f"Triton refused to load {name}: {exc.message()}") from None
        finally:
            self.forget(name)

    def close(self) -> None:
        self._client.close()
