"""A small client of Prometheus' HTTP API: instant and range queries.

For the dashboard renderer and the tests that prove every panel's query
works against a real Prometheus. Errors name the query and what Prometheus
said (a PromQL error comes back as ``status: error`` with its message);
they are :class:`~tidegate.errors.UsageError`, one line on the command line.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.errors import UsageError

__all__ = ["PrometheusApi", "Series"]


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a result: its labels and (unix time, value) points."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def finite(self) -> bool:
        """Some point is a number (not NaN or infinite): the query saw data."""
        return any(math.isfinite(v) for _, v in self.points)


class PrometheusApi:
    """``base_url``: e.g. http://127.0.0.1:9090 (no trailing path needed)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"Prometheus URL {base_url!r}: expected http://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query (``/api/v1/query``) at ``at`` (default: now)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return _series(self._get("/api/v1/query", params, expr))

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        """A range query (``/api/v1/query_range``)."""
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{max(step_s, 0.001):.3f}",
        }
        return _series(self._get("/api/v1/query_range", params, expr))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - the URL's scheme is checked above
                f"{self.base_url}/-/ready", timeout=self.timeout_s
            ) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _get(self, path: str, params: Mapping[str, str], expr: str) -> Mapping[str, Any]:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as reply:  # noqa: S310
                body = reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()  # PromQL errors come as 400/422 with a JSON body
        except (OSError, urllib.error.URLError) as exc:
            raise UsageError(f"Prometheus at {self.base_url} cannot be reached: {exc}") from None
        try:
            answer = json.loads(body)
        except ValueError:
            raise UsageError(
                f"query {expr!r}: Prometheus answered no JSON: {body[:200]!r}"
            ) from None
        if not isinstance(answer, Mapping) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, Mapping) else answer
            raise UsageError(f"query {expr!r}: {error}")
        data = answer.get("data")
        if not isinstance(data, Mapping):
            raise UsageError(f"query {expr!r}: no data in Prometheus' answer")
        return data


def _series(data: Mapping[str, Any]) -> list[Series]:
    kind = data.get("resultType")
    result = data.get("result") or []
    if kind == "scalar":
        t, v = result
        return [Series({}, ((float(t), float(v)),))]
    found = []
    for item in result:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        if "values" in item:
            points = tuple((float(t), float(v)) for t, v in item["values"])
        else:
            t, v = item["value"]
            points = ((float(t), float(v)),)
        found.append(Series(labels, points))
    return found
