"""Reading the API key and the claimed tenant from a call's metadata (both gRPC services)."""

from __future__ import annotations

from broker.tenancy import presented_key


def test_a_bearer_token_is_the_key_whatever_the_scheme_case() -> None:
    assert presented_key([("authorization", "bearer  k-1 ")]) == ("k-1", None)
    assert presented_key([("authorization", "Bearer k-2")]) == ("k-2", None)


def test_another_authorization_scheme_is_no_key() -> None:
    assert presented_key([("authorization", "Basic dXNlcg==")]) == (None, None)


def test_x_api_key_and_the_claimed_tenant() -> None:
    metadata = [("x-api-key", " k-3\t"), ("x-tidegate-tenant", "acme")]
    assert presented_key(metadata) == ("k-3", "acme")


def test_binary_values_are_passed_over_and_no_metadata_is_no_key() -> None:
    assert presented_key([("x-api-key", b"k-4"), ("user-agent", "grpc")]) == (None, None)
    assert presented_key(None) == (None, None)
