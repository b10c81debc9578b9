"""A client of the registry's HTTP API: artifacts up and down, versions registered and read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from inspectloop.core.errors import BackendUnavailableError, PermanentError, TransientError


class RegistryNotFoundError(PermanentError):
    """The registry has no such model, version or artifact (404)."""


class RegistryClient:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 500:
            raise TransientError(f"registry {response.status_code}: {response.text[:500]}")
        if response.status_code == 404:
            raise RegistryNotFoundError(
                f"registry has no {response.url.path} (404): {response.text[:500]}"
            )
        if response.status_code >= 400:
            raise PermanentError(
                f"registry refused ({response.status_code}): {response.text[:500]}"
            )
        return response.json() if response.content else None

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            return self._check(self._http.request(method, url, **kwargs))
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc

    def upload_artifact(self, path: Path, sha256: str) -> str:
        """Stores the file under its hash (the registry verifies it); returns its URI."""
        with path.open("rb") as body:
            self._call(
                "PUT",
                f"/v1/artifacts/{sha256}",
                content=body.read(),
                headers={"Content-Type": "application/octet-stream"},
            )
        return f"{self._http.base_url}v1/artifacts/{sha256}"

    def download_artifact(self, sha256: str, target: Path) -> Path:
        try:
            response = self._http.get(f"/v1/artifacts/{sha256}")
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc
        self._check(response) if response.status_code >= 400 else None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        return target

    def register_version(
        self, model_name: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Register the next version; a retry with the same key returns the same version."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call(
            "POST", f"/v1/models/{model_name}/versions", json=body, headers=headers
        )
        return result

    def versions(self, model_name: str) -> list[dict[str, Any]]:
        try:
            result = self._call("GET", f"/v1/models/{model_name}/versions")
        except RegistryNotFoundError:  # no version of this model yet
            return []
        items: list[dict[str, Any]] = result["versions"] if isinstance(result, dict) else result
        return items

    def version(self, model_name: str, version: int) -> dict[str, Any]:
        """One version in full: artifacts, lineage, gates, approvals."""
        result: dict[str, Any] = self._call("GET", f"/v1/models/{model_name}/versions/{version}")
        return result

    def transition(
        self, model_name: str, version: int, to_stage: str, reason: str
    ) -> dict[str, Any]:
        """Move a version to ``to_stage``; a version already there is left as it is."""
        current = self.version(model_name, version)
        if current["stage"] == to_stage:
            return current
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/models/{model_name}/versions/{version}/transitions",
            json={"to_stage": to_stage, "reason": reason, "from_stage": current["stage"]},
        )
        return result

    def approve(
        self, model_name: str, version: int, meaning: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """Sign the version electronically (the client's token must be a quality or admin
        user's, and ``password`` that user's)."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/models/{model_name}/versions/{version}/approvals",
            json={"meaning": meaning, "password": password, "comment": comment},
        )
        return result

    def close(self) -> None:
        self._http.close()
