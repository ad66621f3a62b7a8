"""The Orthanc REST client: the one module that talks to Orthanc (tests use a real Orthanc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests


class OrthancError(Exception):
    pass


class OrthancTooLarge(OrthancError):
    """An instance larger than we take: left in Orthanc, never read whole."""


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_id: str


class OrthancClient:
    def __init__(self, url: str, *, username: str = "", password: str = "", timeout: float = 30):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if username:
            self.session.auth = (username, password)
        self.timeout = timeout

    def _get(self, path: str, **params: Any) -> requests.Response:
        try:
            response = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise OrthancError(f"cannot reach Orthanc: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OrthancError(f"Orthanc answered {response.status_code} to GET {path}")
        return response

    def changes(self, *, since: int, limit: int = 100) -> tuple[list[Change], int, bool]:
        """(changes after ``since``, the last sequence number, whether the feed is exhausted)."""
        body = self._get("/changes", since=since, limit=limit).json()
        changes = [
            Change(seq=int(c["Seq"]), change_type=str(c["ChangeType"]), resource_id=str(c["ID"]))
            for c in body.get("Changes", [])
        ]
        return changes, int(body.get("Last", since)), bool(body.get("Done", True))

    def series_instances(self, series_id: str) -> list[str]:
        return [str(i) for i in self._get(f"/series/{series_id}").json().get("Instances", [])]

    def instance_file(self, instance_id: str, max_bytes: int | None = None) -> bytes:
        """The instance's file; past ``max_bytes`` the download stops (``OrthancTooLarge``), so
        memory stays bounded whatever Orthanc holds."""
        path = f"/instances/{instance_id}/file"
        try:
            response = self.session.get(f"{self.url}{path}", stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise OrthancError(f"cannot reach Orthanc: {type(exc).__name__}") from None
        with response:
            if response.status_code != 200:
                raise OrthancError(f"Orthanc answered {response.status_code} to GET {path}")
            data = bytearray()
            try:
                for block in response.iter_content(2**20):
                    data += block
                    if max_bytes is not None and len(data) > max_bytes:
                        raise OrthancTooLarge(f"instance {instance_id} exceeds {max_bytes} bytes")
            except requests.RequestException as exc:
                raise OrthancError(f"cannot read from Orthanc: {type(exc).__name__}") from None
        return bytes(data)

    def delete_instance(self, instance_id: str) -> None:
        """Delete one instance (Orthanc drops its series with its last instance); gone is fine."""
        try:
            response = self.session.delete(
                f"{self.url}/instances/{instance_id}", timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise OrthancError(f"cannot reach Orthanc: {type(exc).__name__}") from None
        if response.status_code not in (200, 404):
            raise OrthancError(f"Orthanc answered {response.status_code} to DELETE instance")

    def upload(self, data: bytes) -> dict[str, Any]:
        response = self.session.post(f"{self.url}/instances", data=data, timeout=self.timeout)
        if response.status_code != 200:
            raise OrthancError(f"Orthanc answered {response.status_code} to POST /instances")
        result: dict[str, Any] = response.json()
        return result
