"""The event contracts: generated code is current, messages round-trip, enums follow buf style."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from inspectloop.devtools import protogen
from inspectloop.devtools.cli import dev_app
from inspectloop.v1 import (
    common_pb2,
    edge_pb2,
    feedback_pb2,
    inspect_service_pb2,
    inspect_service_pb2_grpc,
    inspection_pb2,
    models_pb2,
    monitor_pb2,
    rollout_pb2,
)

PACKAGE = "inspectloop.v1"


def _modules() -> list[ModuleType]:
    """The generated ``*_pb2`` module of every proto file, found from the proto directory."""
    protos = sorted((protogen.PROTO_ROOT / protogen.PACKAGE_PATH).glob("*.proto"))
    return [importlib.import_module(f"{PACKAGE}.{p.stem}_pb2") for p in protos]


def _nested(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry:
            yield from _nested(nested)


def _all_messages() -> list[Descriptor]:
    return [
        d
        for module in _modules()
        for top in module.DESCRIPTOR.message_types_by_name.values()
        for d in _nested(top)
    ]


def _all_enums() -> list[EnumDescriptor]:
    enums = [e for module in _modules() for e in module.DESCRIPTOR.enum_types_by_name.values()]
    enums += [e for message in _all_messages() for e in message.enum_types]
    return enums


# --- realistic instances ----------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=1_767_225_600 + seconds, nanos=nanos)  # 2026-01-01T00:00:00Z + s


def _image(n: int) -> common_pb2.ImageRef:
    digest = f"{n:064x}"
    return common_pb2.ImageRef(
        uri=f"file:///var/inspectloop/blobs/{digest[:2]}/{digest}",
        sha256=digest,
        size_bytes=48_213 + n,
        width=224,
        height=224,
        content_type="image/png",
    )


def _model(version: str, role: common_pb2.ModelRole) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name="blister-pack-classifier", version=version, role=role)


def _prediction(top: str, confidence: float) -> common_pb2.Prediction:
    rest = (1.0 - confidence) / 2
    classes = ["good", "scratch", "missing_label"]
    return common_pb2.Prediction(
        scores=[
            common_pb2.ClassScore(class_name=c, score=confidence if c == top else rest)
            for c in classes
        ],
        top_class=top,
        confidence=confidence,
        anomaly_score=0.42 if top == "good" else 1.7,
    )


def _window(start: int, size: int) -> monitor_pb2.SampleWindow:
    return monitor_pb2.SampleWindow(size=size, start=_ts(start), end=_ts(start + size // 4))


def _scope() -> common_pb2.Scope:
    return common_pb2.Scope(
        lines=["line-07", "line-08"], skus=["4711-20"], label_designs=["2026-spring"]
    )


def _inspection() -> inspection_pb2.InspectionEvent:
    return inspection_pb2.InspectionEvent(
        inspection_id="0b9f4c1e-8d55-4f0a-9a43-5f1f0b2e7c11",
        request_id="line-07/cam-2/000184512",
        line="line-07",
        station="sealing",
        camera="cam-2",
        sku="4711-20",
        label_design="2026-spring",
        image=_image(1),
        model=_model("7", common_pb2.MODEL_ROLE_CANARY),
        prediction=_prediction("scratch", 0.62),
        decision=common_pb2.DECISION_REJECT,
        human_review_required=True,
        review_reason=common_pb2.REVIEW_REASON_GUARDED_REJECT,
        review_detail="line guarded after feature drift; reject needs confirmation",
        line_mode=common_pb2.LINE_MODE_GUARDED,
        feature_vector=[0.125, -0.5, 1.75, 0.0, 3.25, -2.0, 0.0625, 0.5],
        image_stats=common_pb2.ImageStats(
            brightness=0.46, contrast=0.18, sharpness=812.5, mean_r=0.52, mean_g=0.47, mean_b=0.39
        ),
        latency_ms=7.8,
        inference_latency_ms=2.1,
        shadow_results=[
            inspection_pb2.ShadowResult(
                model=_model("8", common_pb2.MODEL_ROLE_SHADOW),
                prediction=_prediction("good", 0.97),
                would_decide=common_pb2.DECISION_PASS,
                latency_ms=2.4,
            )
        ],
        captured_at=_ts(10, 250_000_000),
        decided_at=_ts(10, 258_000_000),
        review_threshold=0.8,
        routing_generation=42,
        edge_node_id="line-07-pc-2",
    )


def _feedback() -> feedback_pb2.OperatorFeedback:
    return feedback_pb2.OperatorFeedback(
        feedback_id="5d1c2b7a-0e7f-4a63-8c7e-2a2cf1e0d9aa",
        inspection_id="0b9f4c1e-8d55-4f0a-9a43-5f1f0b2e7c11",
        line="line-07",
        sku="4711-20",
        image=_image(1),
        verdict=feedback_pb2.FEEDBACK_VERDICT_FALSE_REJECT,
        defect_class="good",
        operator_id="op-1138",
        comment="new label artwork, not a scratch",
        reviewed_at=_ts(95),
        station="sealing",
        label_design="2026-spring",
        model=_model("7", common_pb2.MODEL_ROLE_CANARY),
        original_decision=common_pb2.DECISION_REJECT,
    )


def _line_mode_changed() -> monitor_pb2.LineModeChanged:
    return monitor_pb2.LineModeChanged(
        change_id="b5e0e6a4-5c9c-4a43-8d7b-0e5a3c7d9f10",
        line="line-07",
        previous_mode=common_pb2.LINE_MODE_AUTO,
        new_mode=common_pb2.LINE_MODE_MANUAL,
        reason="feature drift on sku 4711-20 (MMD 0.31 > 0.12) and false rejects 8%",
        triggering_alert_ids=["a-1", "a-2"],
        changed_by="monitor",
        changed_at=_ts(120),
        generation=5,
    )


def _drift_alert() -> monitor_pb2.DriftAlert:
    return monitor_pb2.DriftAlert(
        alert_id="a-1",
        line="line-07",
        sku="4711-20",
        label_design="2026-spring",
        detector="feature_mmd",
        kind=monitor_pb2.DRIFT_KIND_FEATURE,
        statistic=0.31,
        threshold=0.12,
        p_value=0.001,
        window=_window(0, 300),
        severity=monitor_pb2.ALERT_SEVERITY_CRITICAL,
        sample_images=[_image(1), _image(2), _image(3)],
        nuisance=True,
        nuisance_explanation="brightness -18%: features within reference after correction",
        model=_model("6", common_pb2.MODEL_ROLE_STABLE),
        reference_id="ref-blister-pack-classifier-6",
        detected_at=_ts(118),
    )


def _retrain_request() -> monitor_pb2.RetrainRequest:
    return monitor_pb2.RetrainRequest(
        request_id="r-7f3e",
        reason=monitor_pb2.RETRAIN_REASON_CHANGEOVER,
        reason_detail="label redesign 2026-spring on line-07 and line-08",
        evidence=[
            monitor_pb2.RetrainEvidence(
                alert_id="a-1",
                detector="feature_mmd",
                statistic=0.31,
                threshold=0.12,
                window=_window(0, 300),
                sample_images=[_image(1), _image(2)],
            )
        ],
        scope=_scope(),
        parent_model=_model("6", common_pb2.MODEL_ROLE_STABLE),
        requested_by="monitor",
        requested_at=_ts(121),
        min_labelled_images=200,
        changeover_id="co-2026-spring",
    )


def _changeover() -> monitor_pb2.ChangeoverAnnounced:
    return monitor_pb2.ChangeoverAnnounced(
        changeover_id="co-2026-spring",
        lines=["line-07", "line-08"],
        sku="4711-20",
        label_design="2026-spring",
        previous_sku="4711-20",
        previous_label_design="2025-classic",
        effective_at=_ts(0),
        reference_images=[_image(100)],
        announced_by="mes",
        announced_at=_ts(-3600),
        note="new regulatory pictogram on the side panel",
    )


def _model_version() -> models_pb2.ModelVersion:
    return models_pb2.ModelVersion(
        name="blister-pack-classifier",
        version="7",
        stage=models_pb2.MODEL_STAGE_REJECTED,
        metrics={"accuracy": 0.991, "false_reject_rate": 0.004, "latency_p95_ms": 3.2},
        class_metrics=[
            models_pb2.ClassMetrics(
                class_name="scratch", precision=0.97, recall=0.95, f1=0.96, support=120
            ),
            models_pb2.ClassMetrics(
                class_name="good", precision=0.998, recall=0.996, f1=0.997, support=900
            ),
        ],
        gate_results=[
            models_pb2.GateResult(
                gate="recall/scratch",
                passed=False,
                value=0.95,
                threshold=0.97,
                higher_is_better=True,
                detail="6 of 120 scratches missed",
            ),
            models_pb2.GateResult(
                gate="false_reject_rate", passed=True, value=0.004, threshold=0.01
            ),
        ],
        rejection_reasons=["recall/scratch 0.95 < 0.97"],
        class_evidence=[
            models_pb2.ClassEvidence(
                class_name="scratch", examples=10, detected=10, recall_lower_bound=0.741
            ),
            models_pb2.ClassEvidence(
                class_name="torn_label", examples=4, detected=4, recall_lower_bound=0.473
            ),
        ],
        required_recall_lower_bound=0.7,
        open_evidence_classes=["torn_label"],
        artifacts=[
            models_pb2.ModelArtifact(
                kind=models_pb2.ARTIFACT_KIND_ONNX,
                uri="file:///var/inspectloop/models/blister-pack-classifier/7/model.onnx",
                sha256="ab" * 32,
                size_bytes=6_104_233,
            ),
            models_pb2.ModelArtifact(
                kind=models_pb2.ARTIFACT_KIND_REPORT,
                uri="file:///var/inspectloop/models/blister-pack-classifier/7/report.json",
                sha256="cd" * 32,
                size_bytes=18_442,
            ),
        ],
        lineage=models_pb2.ModelLineage(
            parent_version="6",
            dataset_snapshot_id="ds-20260101-0001",
            dataset_sha256="ef" * 32,
            training_run_id="ray-job-0042",
            code_version="b528c6f",
            seed=1234,
            retrain_request_id="r-7f3e",
            framework_versions={"torch": "2.5.1", "onnx": "1.17.0"},
        ),
        created_at=_ts(900),
        classes=["good", "scratch", "missing_label"],
        input_width=224,
        input_height=224,
        scope=_scope(),
        updated_at=_ts(960),
    )


def _rollout_event() -> rollout_pb2.RolloutEvent:
    return rollout_pb2.RolloutEvent(
        event_id="e-91",
        rollout_id="ro-7",
        model_name="blister-pack-classifier",
        version="7",
        lines=["line-07"],
        phase=rollout_pb2.ROLLOUT_PHASE_ROLLED_BACK,
        previous_phase=rollout_pb2.ROLLOUT_PHASE_CANARY,
        step_index=2,
        canary_weight_bps=2500,
        analysis=[
            rollout_pb2.AnalysisCheck(
                metric="error_rate",
                result=rollout_pb2.ANALYSIS_RESULT_FAIL,
                value=0.031,
                threshold=0.01,
                query='sum(rate(inspectloop_gateway_errors_total{version="7"}[1m]))',
                sample_count=4_812,
                detail="0.031 > 0.01",
            ),
            rollout_pb2.AnalysisCheck(
                metric="confirmed_false_reject_rate",
                result=rollout_pb2.ANALYSIS_RESULT_INCONCLUSIVE,
                threshold=0.02,
                detail="no labelled images yet",
            ),
        ],
        failed_checks=2,
        reason="error_rate 0.031 > 0.01 twice",
        actor="rollout-controller",
        occurred_at=_ts(1500),
        stable_version="6",
        approval_id="sig-2026-0007",
    )


def _routing() -> rollout_pb2.Routing:
    return rollout_pb2.Routing(
        line="line-07",
        generation=42,
        stable=_model("6", common_pb2.MODEL_ROLE_STABLE),
        canary=_model("7", common_pb2.MODEL_ROLE_CANARY),
        canary_weight_bps=1000,
        shadows=[_model("8", common_pb2.MODEL_ROLE_SHADOW)],
        edge_wave=1,
        rollout_id="ro-7",
        updated_at=_ts(1200),
    )


def _heartbeat() -> edge_pb2.EdgeHeartbeat:
    return edge_pb2.EdgeHeartbeat(
        node_id="line-07-pc-2",
        line="line-07",
        station="sealing",
        wave=1,
        loaded_model=_model("7", common_pb2.MODEL_ROLE_EDGE),
        loaded_model_sha256="12" * 32,
        previous_model=_model("6", common_pb2.MODEL_ROLE_EDGE),
        outbox_depth=318,
        oldest_outbox_at=_ts(1300),
        last_sync_at=_ts(1290),
        routing_generation=42,
        state=edge_pb2.EDGE_NODE_STATE_DEGRADED,
        last_error="bus unreachable: connection refused",
        agent_version="0.1.0",
        sent_at=_ts(1330),
    )


def _inspect_request() -> inspect_service_pb2.InspectRequest:
    return inspect_service_pb2.InspectRequest(
        line="line-07",
        station="sealing",
        camera="cam-2",
        sku="4711-20",
        label_design="2026-spring",
        request_id="line-07/cam-2/000184512",
        image=b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        content_type="image/png",
        captured_at=_ts(10, 250_000_000),
    )


def _inspect_response() -> inspect_service_pb2.InspectResponse:
    return inspect_service_pb2.InspectResponse(
        decision=common_pb2.DECISION_PASS,
        prediction=_prediction("good", 0.71),
        model=_model("6", common_pb2.MODEL_ROLE_STABLE),
        human_review_required=True,
        review_reason=common_pb2.REVIEW_REASON_GUARDED_LOW_CONFIDENCE,
        review_detail="confidence 0.71 < 0.80",
        inspection_id="0b9f4c1e-8d55-4f0a-9a43-5f1f0b2e7c11",
        latency_ms=6.4,
        line_mode=common_pb2.LINE_MODE_GUARDED,
    )


#: One realistic instance of every top-level message that is an event or an RPC message.
EXAMPLES: dict[str, Message] = {
    m.DESCRIPTOR.full_name: m
    for m in (
        _inspection(),
        _feedback(),
        _line_mode_changed(),
        _drift_alert(),
        _retrain_request(),
        _changeover(),
        _model_version(),
        _rollout_event(),
        _routing(),
        _heartbeat(),
        _inspect_request(),
        _inspect_response(),
    )
}


def _parts(message: Message) -> Iterator[Message]:
    """The message and every message nested in it, depth first."""
    yield message
    for field, value in message.ListFields():
        if isinstance(value, Message):
            yield from _parts(value)
        elif field.message_type is not None:  # repeated message field or map
            items = value.values() if field.message_type.GetOptions().map_entry else value
            for item in items:
                if isinstance(item, Message):
                    yield from _parts(item)


def _examples_of_every_message() -> dict[str, Message]:
    """An example for every message of the package, events and their parts alike."""
    found: dict[str, Message] = {}
    for example in EXAMPLES.values():
        for part in _parts(example):
            found.setdefault(part.DESCRIPTOR.full_name, part)
    return found


# --- generated code is current ----------------------------------------------------------------


def test_generated_code_is_not_stale() -> None:
    stale = protogen.stale_files()
    assert not stale, (
        f"generated code in {protogen.DEFAULT_OUT_DIR} is stale ({', '.join(stale)}): "
        "run `inspectloop dev gen-proto` and commit the result"
    )


def test_grpc_module_imports_through_the_package() -> None:
    source = Path(inspect_service_pb2_grpc.__file__).read_text(encoding="utf-8")
    assert "from inspectloop.v1 import inspect_service_pb2" in source


def test_stale_files_finds_changed_missing_and_extra_files(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    protogen.generate(out)
    assert protogen.stale_files(out) == []

    (out / "common_pb2.py").write_text("# edited by hand\n", encoding="utf-8")
    (out / "edge_pb2.pyi").unlink()
    (out / "retired_pb2.py").write_text("# from a deleted proto\n", encoding="utf-8")
    (out / "notes.txt").write_text("not generated\n", encoding="utf-8")
    assert protogen.stale_files(out) == [
        "common_pb2.py",
        "edge_pb2.pyi",
        "notes.txt",
        "retired_pb2.py",
    ]

    protogen.generate(out)
    # Generated-looking leftovers are removed; anything else is left for a person to judge.
    assert protogen.stale_files(out) == ["notes.txt"]


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    protogen.generate(first)
    protogen.generate(second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_missing_proto_directory_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(protogen.ProtoGenerationError, match="no proto directory"):
        protogen.stale_files(tmp_path / "v1", proto_root=tmp_path / "proto")


def test_protoc_errors_are_reported(tmp_path: Path) -> None:
    package = tmp_path / "proto" / protogen.PACKAGE_PATH
    package.mkdir(parents=True)
    (package / "broken.proto").write_text(
        'syntax = "proto3";\npackage inspectloop.v1;\nmessage Broken { Nope x = 1; }\n',
        encoding="utf-8",
    )
    with pytest.raises(protogen.ProtoGenerationError, match='"Nope" is not defined'):
        protogen.generate(tmp_path / "v1", proto_root=tmp_path / "proto")


def test_cli_check_passes_on_committed_code() -> None:
    result = CliRunner().invoke(dev_app, ["gen-proto", "--check"])
    assert result.exit_code == 0, result.output


def test_cli_check_lists_stale_files_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "v1"
    protogen.generate(out)
    (out / "rollout_pb2.py").unlink()
    monkeypatch.setattr(protogen, "DEFAULT_OUT_DIR", out)
    result = CliRunner().invoke(dev_app, ["gen-proto", "--check"])
    assert result.exit_code == 1
    assert "rollout_pb2.py" in result.output
    assert "inspectloop dev gen-proto" in result.output

    result = CliRunner().invoke(dev_app, ["gen-proto"])
    assert result.exit_code == 0, result.output
    assert protogen.stale_files(out) == []


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_examples_of_every_message()))
def test_message_round_trips(name: str) -> None:
    message = _examples_of_every_message()[name]
    data = message.SerializeToString(deterministic=True)
    decoded = type(message).FromString(data)
    assert decoded == message
    assert decoded.SerializeToString(deterministic=True) == data
    assert data, f"{name} example is empty"


def test_every_message_has_an_example() -> None:
    missing = {d.full_name for d in _all_messages()} - set(_examples_of_every_message())
    assert not missing, f"add realistic examples of {sorted(missing)} to EXAMPLES"


def test_examples_set_every_field() -> None:
    """Every field of every message is set in some example, so each one is round-tripped."""
    declared = {(d.full_name, f.name) for d in _all_messages() for f in d.fields}
    set_somewhere = {
        (part.DESCRIPTOR.full_name, field.name)
        for example in EXAMPLES.values()
        for part in _parts(example)
        for field, _ in part.ListFields()
    }
    assert not declared - set_somewhere, (
        f"never set in EXAMPLES: {sorted(declared - set_somewhere)}"
    )


def test_every_message_lives_in_the_package() -> None:
    for descriptor in _all_messages():
        assert descriptor.full_name.startswith(f"{PACKAGE}."), descriptor.full_name
        assert descriptor.file.package == PACKAGE


def test_feature_vector_is_packed() -> None:
    field = inspection_pb2.InspectionEvent.DESCRIPTOR.fields_by_name["feature_vector"]
    assert field.is_packed
    vector = [float(i) / 8 for i in range(128)]
    event = inspection_pb2.InspectionEvent(feature_vector=vector)
    # Packed: one tag (2 bytes for field 16), one length (2 bytes for 512), 4 bytes per float;
    # unpacked would repeat the tag before every value.
    assert len(event.SerializeToString()) == 2 + 2 + 4 * len(vector)


def test_optional_values_distinguish_absent_from_zero() -> None:
    no_data = rollout_pb2.AnalysisCheck(metric="error_rate")
    assert not no_data.HasField("value")
    zero = rollout_pb2.AnalysisCheck(metric="error_rate", value=0.0)
    assert rollout_pb2.AnalysisCheck.FromString(zero.SerializeToString()).HasField("value")


# --- enums ------------------------------------------------------------------------------------


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def test_enums_exist() -> None:
    names = {e.name for e in _all_enums()}
    assert {
        "ModelRole",
        "Decision",
        "LineMode",
        "ReviewReason",
        "FeedbackVerdict",
        "AlertSeverity",
        "DriftKind",
        "RetrainReason",
        "ModelStage",
        "ArtifactKind",
        "RolloutPhase",
        "AnalysisResult",
        "EdgeNodeState",
    } <= names


@pytest.mark.parametrize("enum", _all_enums(), ids=lambda e: e.full_name)
def test_enum_has_unspecified_zero_and_prefixed_values(enum: EnumDescriptor) -> None:
    prefix = _upper_snake(enum.name)
    assert enum.values_by_number[0].name == f"{prefix}_UNSPECIFIED"
    for value in enum.values:
        assert value.name.startswith(f"{prefix}_"), f"{value.name} lacks the prefix {prefix}_"


# --- service ----------------------------------------------------------------------------------


def test_inspect_service_descriptor() -> None:
    service = inspect_service_pb2.DESCRIPTOR.services_by_name["Inspect"]
    assert service.full_name == f"{PACKAGE}.Inspect"
    method = service.methods_by_name["Inspect"]
    assert method.input_type.full_name == f"{PACKAGE}.InspectRequest"
    assert method.output_type.full_name == f"{PACKAGE}.InspectResponse"
    assert not method.client_streaming
    assert not method.server_streaming
    assert [m.name for m in service.methods] == ["Inspect"]


def test_inspect_service_stubs_are_generated() -> None:
    assert hasattr(inspect_service_pb2_grpc, "InspectStub")
    assert hasattr(inspect_service_pb2_grpc, "InspectServicer")
    assert hasattr(inspect_service_pb2_grpc, "add_InspectServicer_to_server")
