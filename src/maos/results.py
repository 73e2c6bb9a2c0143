"""Published results: what an agent publishes as its task's result (a summary and the files it
produced), stored under ``keys.task_result`` by the door, read by the report, the context of
dependent tasks, the worker and ``maos result get``. Store contents: read as untrusted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from maos.errors import StoreDataError
from maos.store import keys
from maos.store.base import Store

__all__ = ["PublishedResult", "read_result"]


@dataclass(frozen=True, slots=True)
class PublishedResult:
    """What an agent published as its task's result: a summary and the files it produced."""

    task_id: str
    agent_id: str
    summary: str
    files: tuple[str, ...]
    published_at: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "task_id": self.task_id,
                "agent_id": self.agent_id,
                "summary": self.summary,
                "files": list(self.files),
                "published_at": self.published_at,
            },
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PublishedResult:
        raw = json.loads(data)
        return cls(
            task_id=str(raw["task_id"]),
            agent_id=str(raw["agent_id"]),
            summary=str(raw["summary"]),
            files=tuple(str(item) for item in raw["files"]),
            published_at=float(raw["published_at"]),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "summary": self.summary,
            "files": list(self.files),
            "published_at": self.published_at,
        }


async def read_result(store: Store, run_id: str, task_id: str) -> PublishedResult | None:
    """The result published for ``task_id`` (the latest, if several attempts published)."""
    key = keys.task_result(run_id, task_id)
    found = await store.get(key)
    if found is None:
        return None
    try:
        return PublishedResult.from_json(found.value)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # float(10**400): OverflowError
        raise StoreDataError(f"{key!r} does not hold a published result: {found.value[:80]!r}") from exc
