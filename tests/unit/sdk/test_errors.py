"""One translation from gRPC statuses to the SDK's error classes."""

from __future__ import annotations

import grpc
import pytest

import tidegate
from tidegate import errors
from tidegate.errors import from_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.OUT_OF_RANGE, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, errors.ServerError),
        (grpc.StatusCode.DATA_LOSS, errors.ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.ServerError),
    ],
)
def test_each_status_maps_to_its_class(code: grpc.StatusCode, cls: type[Exception]) -> None:
    error = from_rpc_error(FakeRpcError(code, "field x: rule"), method="Publish", server="h:1")
    assert type(error) is cls
    assert isinstance(error, tidegate.TidegateError)
    assert error.code == code.name
    assert "field x: rule" in str(error)


def test_only_unavailable_is_retryable() -> None:
    retryable = {
        name
        for name in errors.STATUS_NAMES
        if from_rpc_error(
            FakeRpcError(getattr(grpc.StatusCode, name), "d"), method="m", server="s"
        ).retryable
    }
    assert retryable == {"UNAVAILABLE"}


def test_messages_stay_on_one_line_and_name_the_server() -> None:
    error = from_rpc_error(
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed\nto connect\n"),
        method="Subscribe",
        server="10.0.0.1:7400",
    )
    assert "\n" not in str(error)
    assert "10.0.0.1:7400" in str(error)
    assert str(error).startswith("Subscribe:")


def test_status_names_follow_the_grpc_numbers() -> None:
    for code in grpc.StatusCode:
        assert errors.STATUS_NAMES[code.value[0]] == code.name


def test_anything_without_a_status_is_a_server_error() -> None:
    error = from_rpc_error(RuntimeError("odd"), method="Read", server="s")
    assert isinstance(error, errors.ServerError)
