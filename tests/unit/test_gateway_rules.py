"""The gateway's rules without a server: image validation, routing, review under line modes."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.devtools.harness.process import pick_free_ports
from inspectloop.gateway.routing import RoutingTable, canary_bucket
from inspectloop.gateway.settings import GatewaySection
from inspectloop.inspection.decision import LineModes, audit_draw, decision_of, prediction, review
from inspectloop.inspection.images import InvalidImageError, decode_image
from inspectloop.inspection.settings import DecisionSettings, ImageLimits
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
    MODEL_ROLE_CANARY,
    MODEL_ROLE_SHADOW,
    MODEL_ROLE_STABLE,
    REVIEW_REASON_ANOMALY,
    REVIEW_REASON_AUDIT_SAMPLE,
    REVIEW_REASON_GUARDED_LOW_CONFIDENCE,
    REVIEW_REASON_GUARDED_REJECT,
    REVIEW_REASON_LOW_CONFIDENCE,
    REVIEW_REASON_MANUAL_MODE,
    ModelRef,
    Prediction,
)
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import Routing

LIMITS = ImageLimits(max_bytes=200_000, min_side=16, max_side=512, max_aspect_ratio=2.0)


def encode(width: int, height: int, fmt: str = "PNG", noise: bool = False) -> bytes:
    if noise:  # incompressible
        pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[:, : width // 2] = (200, 40, 40)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def test_a_valid_image_is_resized_to_the_model_input() -> None:
    decoded = decode_image(encode(96, 80, "JPEG"), "image/jpeg", LIMITS, 64)
    assert decoded.pixels.shape == (64, 64, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.content_type) == (96, 80, "image/jpeg")
    same = decode_image(encode(64, 64), "", LIMITS, 64)  # no declared type: the bytes decide
    assert same.content_type == "image/png"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "words"),
    [
        (b"", "image/png", 400, "no image"),
        (b"not an image at all", "image/png", 400, "not a PNG or JPEG"),
        (encode(64, 64, noise=True)[:2000], "image/png", 400, "corrupt"),
        (encode(64, 64), "image/gif", 415, "image/gif"),
        (encode(64, 64, "BMP"), "", 415, "BMP"),
        (encode(64, 64), "image/jpeg", 400, "bytes are image/png"),
        (encode(8, 8), "image/png", 400, "8x8"),
        (encode(600, 400), "image/png", 400, "600x400"),
        (encode(100, 40), "image/png", 400, "elongated"),
        (encode(400, 400, noise=True), "image/png", 413, "over the limit"),
    ],
)
def test_bad_images_are_refused_with_the_reason(
    data: bytes, content_type: str, status: int, words: str
) -> None:
    with pytest.raises(InvalidImageError, match=words) as caught:
        decode_image(data, content_type, LIMITS, 64)
    assert caught.value.status == status


def declaring(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    png = bytearray(encode(32, 32))
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR data
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")  # its CRC
    return bytes(png)


@pytest.mark.parametrize(("side", "words"), [(5000, "5000x5000"), (20000, "more pixels")])
def test_a_decompression_bomb_is_refused_before_decoding(side: int, words: str) -> None:
    with pytest.raises(InvalidImageError, match=words):
        decode_image(declaring(side, side), "image/png", LIMITS, 64)


def routing(
    generation: int, weight: int, canary: str = "2", shadows: tuple[str, ...] = ()
) -> Routing:
    r = Routing(line="line-1", generation=generation, canary_weight_bps=weight)
    r.stable.CopyFrom(ModelRef(name="m", version="1"))
    if canary:
        r.canary.CopyFrom(ModelRef(name="m", version=canary))
    r.shadows.extend(ModelRef(name="m", version=v) for v in shadows)
    return r


def always(name: str, version: str) -> bool:
    return True


def test_the_canary_share_follows_the_weight_and_a_retry_routes_the_same_way() -> None:
    table = RoutingTable("m", "1")
    assert table.apply(routing(1, 2500))
    ids = [f"request-{i}" for i in range(20000)]
    roles = [table.route("line-1", i, always).decider.role for i in ids]
    canary = sum(r == MODEL_ROLE_CANARY for r in roles)
    assert abs(canary / len(ids) - 0.25) < 0.015  # 4.9 standard deviations
    assert canary == sum(canary_bucket(i) < 2500 for i in ids)
    assert [table.route("line-1", i, always).decider.role for i in ids[:500]] == roles[:500]
    assert table.route("line-2", "x", always).decider == ModelRef(
        name="m", version="1", role=MODEL_ROLE_STABLE
    )


def test_stale_routing_is_ignored_and_weights_are_checked() -> None:
    table = RoutingTable("m", "1")
    assert table.apply(routing(5, 10000))
    assert not table.apply(routing(4, 0))
    assert table.route("line-1", "r", always).decider.version == "2"
    with pytest.raises(ValueError, match="10001"):
        table.apply(routing(6, 10001))


def test_versions_triton_cannot_serve_get_no_traffic() -> None:
    table = RoutingTable("m", "1")
    table.apply(routing(1, 10000, shadows=("3", "4")))

    def ready(name: str, version: str) -> bool:
        return version in ("1", "4")

    route = table.route("line-1", "r", ready)
    assert route.decider.version == "1" and route.decider.role == MODEL_ROLE_STABLE
    assert [(s.version, s.role) for s in route.shadows] == [("4", MODEL_ROLE_SHADOW)]
    with pytest.raises(BackendUnavailableError, match="stable on line line-1"):
        table.route("line-1", "r", lambda name, version: False)
    assert table.models() == {("m", "1"), ("m", "2"), ("m", "3"), ("m", "4")}


def test_decisions_and_reviews_follow_the_line_mode() -> None:
    classes = ("good", "scratch")
    passed = prediction(np.array([0.7, 0.3], dtype=np.float32), classes)
    rejected = prediction(np.array([0.05, 0.95], dtype=np.float32), classes)
    assert (passed.top_class, decision_of(passed)) == ("good", DECISION_PASS)
    assert decision_of(rejected) == DECISION_REJECT
    assert [s.class_name for s in passed.scores] == list(classes)
    settings = DecisionSettings(
        review_threshold=0.9, low_confidence_threshold=0.5, guarded_pass_sample=0.1
    )

    def reason(mode: int, pred: Prediction, draw: float = 0.5) -> int:
        r = review(mode, pred, settings, draw)  # type: ignore[arg-type]
        assert r.required == (r.reason != 0)
        return r.reason

    assert reason(LINE_MODE_AUTO, passed) == 0
    assert reason(LINE_MODE_AUTO, rejected) == 0
    low = prediction(np.array([0.45, 0.4, 0.15], dtype=np.float32), ("good", "a", "b"))
    assert reason(LINE_MODE_AUTO, low) == REVIEW_REASON_LOW_CONFIDENCE
    assert reason(LINE_MODE_GUARDED, passed) == REVIEW_REASON_GUARDED_LOW_CONFIDENCE
    assert reason(LINE_MODE_GUARDED, rejected) == REVIEW_REASON_GUARDED_REJECT
    sure = prediction(np.array([0.99, 0.01], dtype=np.float32), classes)
    assert reason(LINE_MODE_GUARDED, sure) == 0
    # A guarded line also reviews a share of its confident passes, drawn by request id.
    assert reason(LINE_MODE_GUARDED, sure, draw=0.05) == REVIEW_REASON_AUDIT_SAMPLE
    assert reason(LINE_MODE_MANUAL, sure) == REVIEW_REASON_MANUAL_MODE


def test_a_unit_passes_only_if_both_model_families_pass() -> None:
    classes = ("good", "scratch")
    settings = DecisionSettings(review_threshold=0.9, low_confidence_threshold=0.5)
    probabilities = np.array([0.99, 0.01], dtype=np.float32)
    normal = prediction(probabilities, classes, anomaly_score=0.6)
    flagged = prediction(probabilities, classes, anomaly_score=1.4)
    assert decision_of(normal) == DECISION_PASS
    assert decision_of(flagged) == DECISION_REJECT
    assert flagged.top_class == "good"  # the classifier's answer is kept for the reviewer
    r = review(LINE_MODE_AUTO, flagged, settings)
    assert r.required and r.reason == REVIEW_REASON_ANOMALY and "1.40" in r.detail
    assert review(LINE_MODE_GUARDED, flagged, settings).reason == REVIEW_REASON_GUARDED_REJECT
    defect = prediction(np.array([0.1, 0.9], dtype=np.float32), classes, anomaly_score=3.0)
    assert decision_of(defect) == DECISION_REJECT
    assert not review(LINE_MODE_AUTO, defect, settings).required  # a confident defect call
    draws = [audit_draw(f"req-{i}") for i in range(2000)]
    assert draws == [audit_draw(f"req-{i}") for i in range(2000)]  # retries draw alike
    assert 0.08 < np.mean(np.array(draws) < 0.1) < 0.12


def test_line_modes_apply_in_generation_order() -> None:
    modes = LineModes()
    assert modes.mode("line-1") == LINE_MODE_AUTO
    assert modes.apply(LineModeChanged(line="line-1", new_mode=LINE_MODE_MANUAL, generation=2))
    assert not modes.apply(LineModeChanged(line="line-1", new_mode=LINE_MODE_AUTO, generation=1))
    assert modes.mode("line-1") == LINE_MODE_MANUAL and modes.mode("line-2") == LINE_MODE_AUTO
    with pytest.raises(ValueError, match="no valid new mode"):
        modes.apply(LineModeChanged(line="line-1", generation=3))


# --- Serve's direct ingress -----------------------------------------------------------------


def test_direct_ingress_is_a_ray_environment_with_a_port_range_per_protocol() -> None:
    from inspectloop.gateway.app import serve_env  # noqa: PLC0415 - imports Ray Serve

    # Always: gRPC messages up to the largest image and its fields, not Serve's 2 GiB.
    limit = str(GatewaySection().images.max_bytes + 64 * 1024)
    assert serve_env(GatewaySection()) == {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": limit}
    env = serve_env(
        GatewaySection(
            direct_ingress=True, direct_http_port=8710, direct_grpc_port=9710, replicas=2
        )
    )
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve allocates from [min, max): two replicas, and room for two restarted ones.
    assert (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"],
    ) == ("8710", "8714")
    assert (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"],
    ) == ("9710", "9714")


def test_direct_ingress_on_a_ray_without_it_fails_at_start_naming_the_variables() -> None:
    from inspectloop.gateway.app import check_direct_ingress  # noqa: PLC0415

    http_port, grpc_port = pick_free_ports(2)  # nothing listens there
    section = GatewaySection(
        direct_ingress=True, direct_http_port=http_port, direct_grpc_port=grpc_port
    )
    with pytest.raises(ConfigError, match="RAY_SERVE_ENABLE_DIRECT_INGRESS=1") as refused:
        check_direct_ingress(section, timeout_s=0.5)
    assert str(http_port) in str(refused.value)
    check_direct_ingress(GatewaySection(), timeout_s=0)  # off: nothing to wait for
