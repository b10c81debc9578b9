"""Each rollout as a ``ModelRollout`` custom resource (``k8s/crds/modelrollouts...yaml``).

The controller's SQLite store stays the source of truth; the resource mirrors it where operators
look (``kubectl get modelrollouts``). :class:`ModelRolloutRecorder` creates the resource the
first time it sees a rollout (its spec from the policy the rollout runs under) and patches the
status subresource at every change after that. The two pure functions build what it sends, so
that tests check them against the CRD's schema without a cluster.

Recording is best effort: an API server that cannot be reached or refuses a request is logged,
the status is kept and sent again with the next record, and the rollout itself never waits.

RBAC it needs, in its namespace only: ``modelrollouts`` get, create; ``modelrollouts/status``
get, patch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from inspectloop.rollout.machine import TERMINAL_PHASES, Phase, RolloutStatus

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

log = logging.getLogger(__name__)

GROUP = "inspectloop.io"
VERSION = "v1alpha1"
PLURAL = "modelrollouts"
KIND = "ModelRollout"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_BY = "inspectloop-rollout"
ROLLOUT_ID_ANNOTATION = "inspectloop.io/rollout-id"
REQUEST_TIMEOUT_S = 10.0
MESSAGE_MAX = 32768

# Phase -> the CRD's status.phase (CamelCase, as Kubernetes enums are).
PHASES: dict[Phase, str] = {
    Phase.PENDING: "Pending",
    Phase.SHADOW: "Shadow",
    Phase.CANARY: "Canary",
    Phase.PAUSED: "Paused",
    Phase.PRODUCTION_WATCH: "ProductionWatch",
    Phase.PRODUCTION: "Production",
    Phase.ROLLED_BACK: "RolledBack",
    Phase.FAILED: "Failed",
}

_NAME_MAX = 63  # a DNS-1123 label: usable as a label value and in every name position
_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9._-]+")


def resource_name(rollout_id: str) -> str:
    """A DNS-1123 label for the rollout id; ids that had to change (or be shortened) get a hash
    suffix, so that two ids never share a resource."""
    name = _INVALID.sub("-", rollout_id.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if name == rollout_id and len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(rollout_id.encode()).hexdigest()[:10]
    head = name[: _NAME_MAX - len(digest) - 1].strip("-")
    return f"{head}-{digest}" if head else f"rollout-{digest}"


def _label_value(value: str) -> str:
    value = _LABEL_INVALID.sub("-", value)[:_NAME_MAX]
    return value.strip("-_.")


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_rollout_manifest(status: RolloutStatus) -> dict[str, Any]:
    """The ModelRollout the controller creates for a rollout (no status: the API server ignores
    it on create; :func:`model_rollout_status` goes to the status subresource)."""
    policy = status.policy
    spec: dict[str, Any] = {
        "modelName": status.model,
        "version": int(status.version),
        "lines": list(status.lines),
        "shadow": policy.shadow_intervals > 0,
        "steps": [{"weightBps": weight} for weight in policy.step_weights_bps],
        "analysis": {"failureThreshold": policy.failure_threshold},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": resource_name(status.rollout_id),
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/part-of": "inspectloop",
                "inspectloop.io/model": _label_value(status.model),
                "inspectloop.io/version": _label_value(status.version),
            },
            "annotations": {ROLLOUT_ID_ANNOTATION: status.rollout_id},
        },
        "spec": spec,
    }


def _conditions(status: RolloutStatus) -> list[tuple[str, bool, str]]:
    """(type, status, reason) of each condition; every one carries the rollout's reason."""
    phase = status.phase
    held_for_metrics = status.waiting_for == "metrics"
    if phase in TERMINAL_PHASES:
        progressing = (False, PHASES[phase])
    elif phase is Phase.PAUSED:
        progressing = (False, "AwaitingSignature")
    elif held_for_metrics:
        progressing = (False, "MetricsSourceUnavailable")
    else:
        progressing = (True, PHASES[phase])
    if phase is Phase.PAUSED:
        paused = (True, "AwaitingSignature")
    elif held_for_metrics:
        paused = (True, "MetricsSourceUnavailable")
    else:
        paused = (False, PHASES[phase])
    promoted = phase in {Phase.PRODUCTION_WATCH, Phase.PRODUCTION}
    return [
        ("Progressing", *progressing),
        ("Paused", *paused),
        ("Promoted", promoted, PHASES[phase]),
    ]


def model_rollout_status(
    status: RolloutStatus,
    previous: dict[str, Any] | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """The ModelRollout's ``status`` for a rollout status.

    ``previous`` is the resource's current status: a condition whose status did not change keeps
    its lastTransitionTime, as Kubernetes conditions do. ``generation`` is the resource's
    metadata.generation (observedGeneration).
    """
    before = {
        c.get("type"): c for c in (previous or {}).get("conditions", []) if isinstance(c, dict)
    }
    message = (status.reason or PHASES[status.phase])[:MESSAGE_MAX]
    conditions = []
    for kind, value, reason in _conditions(status):
        text = "True" if value else "False"
        old = before.get(kind)
        since = _time(status.updated_at)
        if old is not None and old.get("status") == text and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
        condition: dict[str, Any] = {
            "type": kind,
            "status": text,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    result: dict[str, Any] = {
        "phase": PHASES[status.phase],
        "rolloutId": status.rollout_id,
        "stepIndex": status.step_index,
        "canaryWeightBps": status.canary_weight_bps,
        "passedIntervals": status.passed_intervals,
        "failedChecks": status.failed_checks,
        "waitingFor": status.waiting_for,
        "eventSequence": status.sequence,
        "startedAt": _time(status.started_at),
        "updatedAt": _time(status.updated_at),
        "conditions": conditions,
    }
    if status.stable_version is not None and status.stable_version.isdigit():
        result["stableVersion"] = int(status.stable_version)
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def _load_api() -> CustomObjectsApi:
    from kubernetes import client, config  # noqa: PLC0415 - only in a cluster

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi()


class ModelRolloutRecorder:
    """Mirrors rollouts into ModelRollout resources of one namespace (a ``RolloutRecorder``)."""

    def __init__(self, namespace: str, api: CustomObjectsApi | None = None) -> None:
        """``api``: a ``kubernetes.client.CustomObjectsApi``; by default one from the pod's
        service account (in-cluster), or the kubeconfig outside a cluster."""
        self.namespace = namespace
        self._api = api if api is not None else _load_api()
        self._lock = threading.Lock()
        # Resource name -> its last status as the API server returned it; absent: not seen yet.
        self._known: dict[str, dict[str, Any]] = {}
        self._generations: dict[str, int | None] = {}
        # Statuses not recorded yet because the API server failed: sent again at the next record.
        self._pending: dict[str, RolloutStatus] = {}

    def record(self, status: RolloutStatus) -> None:
        with self._lock:
            self._pending[status.rollout_id] = status
            for rollout_id, pending in list(self._pending.items()):
                if self._try_record(pending):
                    del self._pending[rollout_id]

    @property
    def pending(self) -> int:
        """Statuses waiting to be recorded (the API server failed)."""
        return len(self._pending)

    def _try_record(self, status: RolloutStatus) -> bool:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        name = resource_name(status.rollout_id)
        try:
            if name not in self._known:
                self._ensure(status, name)
            try:
                self._patch_status(status, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # Deleted behind our back: create it again.
                self._known.pop(name, None)
                self._ensure(status, name)
                self._patch_status(status, name)
        except (ApiException, HTTPError, OSError) as exc:
            reason = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)
            log.warning(
                "ModelRollout %s/%s not recorded (%s); trying again at the next change",
                self.namespace,
                name,
                reason,
            )
            return False
        return True

    def _ensure(self, status: RolloutStatus, name: str) -> None:
        """Create the resource if missing; remember its current status either way."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            current = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                current = self._api.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    model_rollout_manifest(status),
                    field_manager=MANAGED_BY,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                log.info("ModelRollout %s/%s created", self.namespace, name)
            except ApiException as conflict:
                if conflict.status != 409:
                    raise
                # Created meanwhile (another replica during a rolling restart): use it.
                current = self._api.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
        self._remember(name, current)

    def _patch_status(self, status: RolloutStatus, name: str) -> None:
        body = {
            "status": model_rollout_status(
                status, self._known.get(name), self._generations.get(name)
            )
        }
        patched = self._api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            body,
            field_manager=MANAGED_BY,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        self._remember(name, patched)

    def _remember(self, name: str, current: object) -> None:
        resource: dict[str, Any] = current if isinstance(current, dict) else {}
        status = resource.get("status")
        self._known[name] = status if isinstance(status, dict) else {}
        generation = resource.get("metadata", {}).get("generation")
        self._generations[name] = generation if isinstance(generation, int) else None
