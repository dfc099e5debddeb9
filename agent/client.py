"""provisiond's API as the agent uses it (requests only), with bounded retries on network errors."""

from __future__ import annotations

import time
from typing import Any

import requests


class ServerError(Exception):
    """provisiond refused a request or could not be reached; the message says which and why."""


class Client:
    def __init__(self, server: str, hostname: str, credential: str, *, timeout: float = 30,
                 attempts: int = 30, delay: float = 2.0) -> None:
        self.base = server.rstrip("/")
        self.hostname = hostname
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {credential}"
        self.session.headers["User-Agent"] = "provisiond-agent"
        self.timeout = timeout
        self.attempts = attempts
        self.delay = delay

    def _node_url(self, tail: str) -> str:
        return f"{self.base}/api/v1/nodes/{self.hostname}/{tail}"

    def _request(self, method: str, url: str, body: Any = None, missing_ok: bool = False) -> Any:
        """JSON in, JSON out. Connection problems and 5xx are retried (a node may boot before
        the network or provisiond is up); 4xx is an answer and fails at once."""
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.delay)
            try:
                response = self.session.request(method, url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                last = f"cannot reach provisiond at {self.base}: {exc.__class__.__name__}: {exc}"
                continue
            if response.status_code >= 500:
                last = f"{method} {url}: provisiond answered {response.status_code}"
                continue
            if missing_ok and response.status_code == 404:
                return None
            if response.status_code >= 400:
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                raise ServerError(f"{method} {url}: {response.status_code}: {detail}")
            return response.json()
        raise ServerError(f"{last} (gave up after {self.attempts} attempts)")

    def manifest(self) -> dict[str, Any]:
        return self._request("GET", self._node_url("manifest"))

    def event(self, payload: dict[str, Any]) -> None:
        self._request("POST", self._node_url("agent-events"), payload)

    def fact(self, name: str) -> Any | None:
        answer = self._request("GET", self._node_url(f"facts/{name}"), missing_ok=True)
        return None if answer is None else answer.get("value")

    def report_fact(self, name: str, value: Any) -> None:
        self._request("PUT", self._node_url(f"facts/{name}"), {"value": value})

    def barrier(self, fact: str, nodes: list[str], step_id: str) -> dict[str, Any]:
        return self._request("POST", self._node_url("barrier"), {"fact": fact, "nodes": nodes, "step": step_id})

    def check_layout(self, facts: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", self._node_url("layout"), facts)
