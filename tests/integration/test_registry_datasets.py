"""The registry's datasets (challenge sets and label artwork): created by quality users from
uploaded files, versioned per name, audited; listed, shown and downloaded by the registry client
and the ``inspectloop datasets`` command. Against the registry service in its own process (as
the trainer and the line PCs reach it), and in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from inspectloop.core.datasets import DEFAULT_CHALLENGE_CLASSES, DatasetScope
from inspectloop.core.errors import BackendUnavailableError, TransientError
from inspectloop.core.registry_client import (
    DatasetFilesError,
    RegistryClient,
    RegistryNotFoundError,
    RegistryRefusedError,
)
from inspectloop.devtools.harness import pick_free_port
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.registry.cli import REGISTRY_TOKEN_ENV, REGISTRY_URL_ENV, datasets_app
from tests.integration.test_registry import (
    Registry,
    database_url,  # noqa: F401 - the fixture, used by name
    open_registry,
)

pytestmark = pytest.mark.integration

TOKENS = {
    "admin": "ilr_" + "a" * 40,
    "quality": "ilr_" + "q" * 40,
    "operator": "ilr_" + "o" * 40,
    "trainer": "ilr_" + "t" * 40,
}
ROLES = {"admin": "admin", "quality": "quality", "operator": "operator", "trainer": "service"}


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry service as it runs in production: its own process, on SQLite."""
    users = [
        RegistryUser(
            name, ROLES[name], token, password=f"{name}-secret-1" if name != "operator" else None
        )
        for name, token in TOKENS.items()
    ]
    with registry_process(tmp_path_factory.mktemp("registry"), users) as url:
        yield url


@pytest.fixture
def clients(registry_url: str) -> Iterator[dict[str, RegistryClient]]:
    made = {
        name: RegistryClient(registry_url, token, timeout_s=30) for name, token in TOKENS.items()
    }
    yield made
    for client in made.values():
        client.close()


def write_png(path: Path, seed: int) -> bytes:
    """A tiny PNG whose pixels (so bytes) differ by ``seed``; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    Image.new("RGB", (4, 3), colour).save(path, format="PNG")
    return path.read_bytes()


def write_jpeg(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed % 256, 10, 200)).save(path, format="JPEG")
    return path.read_bytes()


def challenge_dir(root: Path, classes: dict[str, int], start: int = 0) -> dict[str, str]:
    """``root``/<class>/<n>.png for each class; returns {relative path: sha256}."""
    made = {}
    seed = start
    for label, count in classes.items():
        for n in range(count):
            seed += 1
            data = write_png(root / label / f"unit-{n}.png", seed)
            made[f"{label}/unit-{n}.png"] = hashlib.sha256(data).hexdigest()
    return made


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def admin_http(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=30
    )


def audit_records(url: str) -> list[dict[str, Any]]:
    with admin_http(url) as http:
        reply = http.get("/v1/audit", params={"limit": 1000})
        assert reply.status_code == 200, reply.text
        records: list[dict[str, Any]] = reply.json()["records"]
        return records


# --- the client against the service ---------------------------------------------------------------


def test_quality_uploads_versions_that_are_listed_shown_downloaded_and_audited(
    registry_url: str, clients: dict[str, RegistryClient], tmp_path: Path
) -> None:
    quality = clients["quality"]
    kit = tmp_path / "kit"
    files = challenge_dir(kit, {"good": 3, "ink_smudge": 2})
    (kit / ".DS_Store").write_bytes(b"finder junk")  # hidden: skipped

    first = quality.upload_dataset(
        kit,
        name="kit-b",
        kind="challenge",
        label_design="B",
        description="qualification kit 1",
        scope=DatasetScope(lines=["line-07"]),
    )
    v1 = first.version
    assert (first.created, first.files_uploaded, first.files_present) == (True, 5, 0)
    assert (v1.name, v1.version, v1.kind.value, v1.label_design) == ("kit-b", 1, "challenge", "B")
    assert v1.item_count == 5 and v1.manifest_intact
    assert v1.counts == {c: 0 for c in DEFAULT_CHALLENGE_CLASSES} | {"good": 3, "ink_smudge": 2}
    assert v1.classes == list(DEFAULT_CHALLENGE_CLASSES)
    assert v1.scope.lines == ["line-07"] and v1.created_by == "quality"
    assert {(i.label, i.sha256) for i in v1.items} == {
        (rel.split("/")[0], sha) for rel, sha in files.items()
    }
    assert all(i.size_bytes and i.media_type == "image/png" for i in v1.items)
    assert first.idempotency_key and first.idempotency_key.startswith("content-sha256:")

    # A retried upload (same files, same options) is the same version, nothing is re-sent.
    retry = quality.upload_dataset(
        kit,
        name="kit-b",
        kind="challenge",
        label_design="B",
        description="qualification kit 1",
        scope=DatasetScope(lines=["line-07"]),
    )
    assert (retry.created, retry.files_uploaded, retry.files_present) == (False, 0, 5)
    assert retry.version.version == 1
    assert retry.version.manifest_sha256 == v1.manifest_sha256

    # One more unit: version 2; only the new file is sent.
    extra = challenge_dir(kit / "extra", {"ink_smudge": 1}, start=50)
    files["ink_smudge/unit-9.png"] = extra["ink_smudge/unit-0.png"]
    (kit / "extra" / "ink_smudge" / "unit-0.png").rename(kit / "ink_smudge" / "unit-9.png")
    (kit / "extra" / "ink_smudge").rmdir()
    (kit / "extra").rmdir()
    second = quality.upload_dataset(
        kit, name="kit-b", kind="challenge", label_design="B", description="kit 1 + 1"
    )
    v2 = second.version
    assert (second.created, v2.version, second.files_uploaded, second.files_present) == (
        True,
        2,
        1,
        5,
    )
    assert v2.counts["ink_smudge"] == 3 and v2.item_count == 6
    assert v2.manifest_sha256 != v1.manifest_sha256

    # Listing and showing, by a reader (an operator) too.
    operator = clients["operator"]
    listed = {d.name: d for d in operator.datasets(kind="challenge", label_design="B")}
    assert (listed["kit-b"].latest_version, listed["kit-b"].versions) == (2, 2)
    assert listed["kit-b"].created_by == "quality"
    assert "kit-b" not in {d.name for d in operator.datasets(kind="artwork")}
    assert "kit-b" not in {d.name for d in operator.datasets(label_design="A")}
    latest = operator.dataset_version("kit-b")
    assert (latest.version, latest.item_count) == (2, 6)
    assert operator.dataset_version("kit-b", 1).manifest_sha256 == v1.manifest_sha256
    history = operator.dataset_versions("kit-b")
    assert [v.version for v in history.versions] == [1, 2]
    assert [v.description for v in history.versions] == ["qualification kit 1", "kit 1 + 1"]

    # Downloading reproduces every file under <class>/<sha256>.png, hashes matching.
    target = tmp_path / "download" / "kit-b-v2"
    assert operator.download_dataset("kit-b", 2, target) == target
    downloaded = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert downloaded == {f"{rel.split('/')[0]}/{sha}.png" for rel, sha in files.items()}
    for path in target.rglob("*.png"):
        assert sha256_of(path) == path.stem
    assert [p.name for p in target.parent.iterdir()] == ["kit-b-v2"]  # no staging left
    # Again into the same directory: replaced by version 1's files, nothing stale kept.
    operator.download_dataset("kit-b", 1, target)
    assert len([p for p in target.rglob("*") if p.is_file()]) == 5
    assert [p.name for p in target.parent.iterdir()] == ["kit-b-v2"]

    # Each creation is one audit record holding the manifest's SHA-256; the chain verifies.
    created = [
        r
        for r in audit_records(registry_url)
        if r["action"] == "dataset.created" and r["subject"].startswith("dataset/kit-b/")
    ]
    assert [r["subject"] for r in created] == ["dataset/kit-b/1", "dataset/kit-b/2"]
    assert [r["seq"] for r in created] == [v1.audit_seq, v2.audit_seq]
    assert [r["details"]["manifest_sha256"] for r in created] == [
        v1.manifest_sha256,
        v2.manifest_sha256,
    ]
    assert created[0]["actor"] == "quality" and created[0]["details"]["item_count"] == 5
    with admin_http(registry_url) as http:
        assert http.get("/v1/audit/verify").json()["ok"] is True
        metrics = http.get("/metrics").text
    assert 'inspectloop_registry_dataset_versions_created_total{kind="challenge"}' in metrics
    assert 'inspectloop_registry_dataset_images_total{kind="challenge"} 11.0' in metrics


def test_artwork_is_one_image_or_a_directory_of_skus(
    clients: dict[str, RegistryClient], tmp_path: Path
) -> None:
    quality = clients["quality"]
    art = tmp_path / "artwork-c.jpg"
    write_jpeg(art, 3)
    single = quality.upload_dataset(art, name="art-c", kind="artwork", label_design="C")
    assert single.version.counts == {"": 1} and single.version.classes == []
    assert single.version.items[0].media_type == "image/jpeg"

    skus = tmp_path / "skus"
    write_png(skus / "sku-100" / "front.png", 7)
    write_png(skus / "sku-200" / "front.png", 8)
    write_png(skus / "generic.png", 9)
    by_sku = quality.upload_dataset(
        skus,
        name="art-c",
        kind="artwork",
        label_design="C",
        scope=DatasetScope(skus=["sku-100", "sku-200"]),
    )
    assert by_sku.version.version == 2
    assert by_sku.version.counts == {"": 1, "sku-100": 1, "sku-200": 1}
    target = tmp_path / "art"
    quality.download_dataset("art-c", 2, target)
    assert sorted(p.parent.name for p in target.rglob("*.png")) == [
        "_unlabelled",
        "sku-100",
        "sku-200",
    ]
    assert [d.name for d in quality.datasets(kind="artwork", label_design="C")] == ["art-c"]


def test_refusals_name_their_reason(
    registry_url: str, clients: dict[str, RegistryClient], tmp_path: Path
) -> None:
    quality, operator = clients["quality"], clients["operator"]
    kit = tmp_path / "kit"
    challenge_dir(kit, {"good": 2, "torn_label": 1}, start=100)
    made = quality.upload_dataset(kit, name="kit-r", kind="challenge", label_design="R")
    body: dict[str, Any] = {
        "name": "kit-r",
        "kind": "challenge",
        "label_design": "R",
        "items": [
            {"sha256": i.sha256, "label": i.label, "media_type": i.media_type}
            for i in made.version.items
        ],
    }

    def post(user: str, payload: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=registry_url, timeout=30) as http:
            return http.post(
                "/v1/datasets",
                json=payload,
                headers={"Authorization": f"Bearer {TOKENS[user]}"},
            )

    # Roles: operators and service accounts read but do not create datasets.
    for user in ("operator", "trainer"):
        refused = post(user, body)
        assert refused.status_code == 403, refused.text
        assert (
            f"role {ROLES[user]} may not create-dataset; allowed roles: quality, admin"
            in refused.json()["detail"]
        )
    with pytest.raises(RegistryRefusedError) as forbidden:
        operator.upload_dataset(kit, name="kit-r", kind="challenge", label_design="R")
    assert forbidden.value.status == 403 and "may not create-dataset" in forbidden.value.reason
    assert post("admin", body).status_code == 201  # admin may (version 2)

    # An unknown class: 422 with the reason, and the client says so before sending any bytes.
    unknown = post("quality", body | {"items": [{**body["items"][0], "label": "scratch"}]})
    assert unknown.status_code == 422
    assert "unknown class(es) scratch" in str(unknown.json()["detail"])
    odd = tmp_path / "odd"
    odd_files = challenge_dir(odd, {"good": 1, "scratch": 1}, start=200)
    with pytest.raises(DatasetFilesError, match=r"unknown class\(es\) scratch"):
        quality.upload_dataset(odd, name="kit-odd", kind="challenge", label_design="R")
    assert not any(quality.artifact_exists(sha) for sha in odd_files.values())

    # Items whose bytes were never uploaded: 422 naming them.
    absent = hashlib.sha256(b"never uploaded").hexdigest()
    missing = post(
        "quality",
        body
        | {
            "items": [
                *body["items"],
                {"sha256": absent, "label": "good", "filename": "x.png", "media_type": "image/png"},
            ]
        },
    )
    assert missing.status_code == 422, missing.text
    assert absent in missing.json()["detail"] and "upload them first" in missing.json()["detail"]

    # The first version fixes kind and label design.
    art = tmp_path / "art.png"
    write_png(art, 300)
    with pytest.raises(RegistryRefusedError) as kind_change:
        quality.upload_dataset(art, name="kit-r", kind="artwork", label_design="R")
    assert kind_change.value.status == 409
    assert "fixed by its first version" in kind_change.value.reason
    design_change = post("quality", body | {"label_design": "S"})
    assert design_change.status_code == 409 and "label design 'R'" in design_change.json()["detail"]

    # An idempotency key is for one body only.
    keyed = post("quality", body | {"idempotency_key": "kit-r-try"})
    assert keyed.status_code == 201
    assert post("quality", body | {"idempotency_key": "kit-r-try"}).status_code == 200
    clash = post("quality", body | {"idempotency_key": "kit-r-try", "description": "other"})
    assert clash.status_code == 409 and "different body" in clash.json()["detail"]

    # Files that are no images are refused by name, before anything is sent.
    (kit / "good" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetFilesError, match=r"notes\.txt is not a PNG or JPEG"):
        quality.upload_dataset(kit, name="kit-r", kind="challenge", label_design="R")
    loose = tmp_path / "loose"
    write_png(loose / "unit.png", 400)
    with pytest.raises(DatasetFilesError, match="not in a class directory"):
        quality.upload_dataset(loose, name="kit-loose", kind="challenge", label_design="R")

    # Unknown names and versions: 404 with the reason.
    with pytest.raises(RegistryNotFoundError, match="dataset 'no-such-kit' not found"):
        operator.dataset_version("no-such-kit")
    with pytest.raises(RegistryNotFoundError, match=r"version 99 of dataset 'kit-r' not found"):
        operator.dataset_version("kit-r", 99)
    with pytest.raises(RegistryNotFoundError):
        operator.dataset_versions("no-such-kit")
    with httpx.Client(base_url=registry_url, timeout=30) as http:
        bad = http.get(
            "/v1/datasets/kit-r/versions/newest",
            headers={"Authorization": f"Bearer {TOKENS['operator']}"},
        )
    assert bad.status_code == 422
    assert [d.name for d in operator.datasets(kind="challenge", label_design="R")] == ["kit-r"]
    assert operator.dataset_version("kit-r").version == 3  # admin's and the keyed one


def test_an_unreachable_registry_is_a_retryable_error(tmp_path: Path) -> None:
    client = RegistryClient(f"http://127.0.0.1:{pick_free_port()}", TOKENS["operator"], 5)
    with client, pytest.raises(BackendUnavailableError) as unreachable:
        client.datasets()
    assert isinstance(unreachable.value, TransientError)
    assert "registry unreachable" in str(unreachable.value)
    assert not (tmp_path / "kit").exists()


# --- the command line -----------------------------------------------------------------------------


def run_datasets(*args: str, url: str, token: str | None) -> Any:
    env = {REGISTRY_URL_ENV: url} | ({REGISTRY_TOKEN_ENV: token} if token else {})
    return CliRunner().invoke(datasets_app, list(args), env=env)


def test_cli_uploads_lists_and_shows(registry_url: str, tmp_path: Path) -> None:
    kit = tmp_path / "cli-kit"
    challenge_dir(kit, {"good": 2, "misregistration": 1}, start=500)
    quality = TOKENS["quality"]
    result = run_datasets(
        "upload",
        "--challenge",
        str(kit),
        "--name",
        "cli-kit",
        "--design",
        "D",
        "--line",
        "line-01",
        "--line",
        "line-02",
        "--description",
        "from the CLI",
        url=registry_url,
        token=quality,
    )
    assert result.exit_code == 0, result.output
    assert "created dataset cli-kit version 1" in result.output
    assert "good 2" in result.output and "misregistration 1" in result.output
    assert "audit seq" in result.output and "3 uploaded, 0 already stored" in result.output
    again = run_datasets(
        "upload", "--challenge", str(kit), "--name", "cli-kit", "--design", "D",
        "--line", "line-01", "--line", "line-02", "--description", "from the CLI",
        url=registry_url, token=quality,
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "version 1 exists already" in again.output

    art = tmp_path / "label-d.png"
    write_png(art, 600)
    artwork = run_datasets(
        "upload", "--artwork", str(art), "--name", "art-d", "--design", "D", "--sku", "sku-9",
        url=registry_url, token=quality,
    )  # fmt: skip
    assert artwork.exit_code == 0, artwork.output
    assert "created dataset art-d version 1" in artwork.output

    listing = run_datasets("list", "--design", "D", url=registry_url, token=TOKENS["operator"])
    assert listing.exit_code == 0, listing.output
    assert "cli-kit\tchallenge\tdesign D\tlatest v1" in listing.output
    assert "art-d\tartwork" in listing.output
    only_art = run_datasets("list", "--kind", "artwork", url=registry_url, token=quality)
    assert "art-d" in only_art.output and "cli-kit" not in only_art.output

    shown = run_datasets("show", "cli-kit", "--version", "1", url=registry_url, token=quality)
    assert shown.exit_code == 0, shown.output
    assert "dataset cli-kit version 1 (challenge, label design D): 3 items" in shown.output
    assert "lines line-01, line-02" in shown.output and "versions: 1" in shown.output

    # Failures: exit 1 with the registry's (or the files') reason.
    no_token = run_datasets("list", url=registry_url, token=None)
    assert no_token.exit_code == 1 and "missing API token" in no_token.output
    unknown = run_datasets("show", "nothing-here", url=registry_url, token=quality)
    assert unknown.exit_code == 1 and "dataset 'nothing-here' not found" in unknown.output
    (kit / "good" / "readme.md").write_text("# kit")
    bad_file = run_datasets(
        "upload", "--challenge", str(kit), "--name", "cli-kit", "--design", "D",
        url=registry_url, token=quality,
    )  # fmt: skip
    assert bad_file.exit_code == 1 and "readme.md is not a PNG or JPEG" in bad_file.output
    both = run_datasets(
        "upload", "--challenge", str(kit), "--artwork", str(art), "--name", "x", "--design", "D",
        url=registry_url, token=quality,
    )  # fmt: skip
    assert both.exit_code == 2 and "exactly one of --challenge" in both.output


def test_the_inspectloop_command_has_the_datasets_group() -> None:
    from inspectloop.cli import app  # noqa: PLC0415 - the top-level command loads every group

    result = CliRunner().invoke(app, ["datasets", "--help"])
    assert result.exit_code == 0, result.output
    assert "upload" in result.output and "show" in result.output


# --- in-process, on SQLite and PostgreSQL ---------------------------------------------------------


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:  # noqa: F811
    with open_registry(database_url, tmp_path) as reg:
        yield reg


def test_versions_idempotency_and_kind_on_each_database(registry: Registry) -> None:
    reg = registry
    shas = [reg.upload(write_png_bytes(i), user="quality") for i in range(3)]
    body = {
        "name": "db-kit",
        "kind": "challenge",
        "label_design": "E",
        "classes": ["good", "defect"],
        "items": [
            {"sha256": sha, "label": "good" if i else "defect", "media_type": "image/png"}
            for i, sha in enumerate(shas)
        ],
        "idempotency_key": "db-kit-1",
    }
    first = reg.client.post("/v1/datasets", json=body, headers=reg.auth("quality"))
    assert first.status_code == 201, first.text
    assert first.headers["location"] == "/v1/datasets/db-kit/versions/1"
    assert first.json()["counts"] == {"good": 2, "defect": 1}
    # The same items in another order are the same body.
    reordered = body | {"items": body["items"][::-1]}
    retry = reg.client.post("/v1/datasets", json=reordered, headers=reg.auth("quality"))
    assert retry.status_code == 200 and retry.json()["version"] == 1
    second = reg.client.post(
        "/v1/datasets", json=body | {"idempotency_key": None}, headers=reg.auth("quality")
    )
    assert second.status_code == 201 and second.json()["version"] == 2
    artwork = reg.client.post(
        "/v1/datasets",
        json=body | {"kind": "artwork", "idempotency_key": None},
        headers=reg.auth("quality"),
    )
    assert artwork.status_code == 409, artwork.text
    listed = reg.client.get(
        "/v1/datasets", params={"kind": "challenge"}, headers=reg.auth("operator")
    ).json()
    assert [(d["name"], d["latest_version"], d["versions"]) for d in listed["datasets"]] == [
        ("db-kit", 2, 2)
    ]
    latest = reg.client.get("/v1/datasets/db-kit/versions/latest", headers=reg.auth("operator"))
    assert latest.json()["version"] == 2 and latest.json()["manifest_intact"] is True
    report = reg.store.verify_audit()
    assert report.ok, report.problems
    actions = [r.action for r in reg.store.audit_records(0, 1000)]
    assert actions.count("dataset.created") == 2


def write_png_bytes(seed: int) -> bytes:
    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (seed, 2 * seed, 3 * seed)).save(buffer, format="PNG")
    return buffer.getvalue()
