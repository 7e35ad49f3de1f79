"""ApiKey never shows itself; Retry/Backoff are exponential, jittered, bounded, deterministic."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from tidegate.errors import InvalidArgument, UsageError
from tidegate.options import ApiKey, Retry, Tls

SECRET = "s3cret-key-value"


def test_api_key_never_appears_in_repr_or_str() -> None:
    key = ApiKey(f"  {SECRET}\n")
    assert key.reveal() == SECRET
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert SECRET not in text
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_api_key_rejects_unusable_values_without_quoting_them() -> None:
    with pytest.raises(InvalidArgument) as info:
        ApiKey("has space-inside")
    assert "has space" not in str(info.value)
    with pytest.raises(InvalidArgument):
        ApiKey("")


def test_api_key_from_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    assert ApiKey.from_file(path).reveal() == SECRET
    with pytest.raises(UsageError, match="cannot read"):
        ApiKey.from_file(tmp_path / "missing")
    path.write_text("\n")
    with pytest.raises(UsageError) as info:
        ApiKey.from_file(path)
    assert str(path) in str(info.value)


def test_tls_needs_certificate_and_key_together() -> None:
    with pytest.raises(InvalidArgument, match="together"):
        Tls(certificate_chain=b"cert")
    tls = Tls(certificate_chain=b"cert", private_key=b"PRIVATE")
    assert "PRIVATE" not in repr(tls)


def test_tls_from_files_names_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"CA")
    assert Tls.from_files(ca=tmp_path / "ca.pem").root_certificates == b"CA"
    with pytest.raises(UsageError, match="cert"):
        Tls.from_files(cert=tmp_path / "no.pem", key=tmp_path / "no.key")


def test_backoff_grows_to_its_cap_with_jitter_below_each_step() -> None:
    policy = Retry(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.5, give_up_s=None)
    backoff = policy.backoff(random.Random(7))
    delays = [backoff.failed(now=float(i)) for i in range(8)]
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, cap in zip(delays, caps, strict=True):
        assert delay is not None
        assert cap * 0.5 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered: no two alike


def test_backoff_is_deterministic_for_a_seed() -> None:
    policy = Retry()
    first = policy.backoff(random.Random(3))
    second = policy.backoff(random.Random(3))
    assert [first.failed(0.0) for _ in range(5)] == [second.failed(0.0) for _ in range(5)]


def test_backoff_gives_up_after_give_up_s_without_success() -> None:
    backoff = Retry(initial_s=1.0, max_s=4.0, jitter=0.0, give_up_s=5.0).backoff(random.Random(0))
    assert backoff.failed(now=100.0) == 1.0
    assert backoff.failed(now=101.0) == 2.0
    assert backoff.failed(now=103.0) == 2.0  # clipped to the time left
    assert backoff.failed(now=105.0) is None


def test_success_starts_a_fresh_sequence() -> None:
    backoff = Retry(initial_s=1.0, max_s=8.0, jitter=0.0, give_up_s=3.0).backoff(random.Random(0))
    backoff.failed(now=0.0)
    backoff.failed(now=1.0)
    backoff.succeeded()
    assert backoff.failures == 0
    assert backoff.failed(now=50.0) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"initial_s": 0.0}, "initial_s"),
        ({"initial_s": 2.0, "max_s": 1.0}, "max_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"give_up_s": -1.0}, "give_up_s"),
    ],
)
def test_bad_retry_settings_name_the_setting(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        Retry(**kwargs)
