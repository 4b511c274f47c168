"""Typed records kept in the state store: per-channel watermarks and run summaries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.state.store import ConflictError, DocumentStore, PreconditionFailedError
from shared.timeutil import UtcDateTime

RUN_SUMMARY_TTL_SECONDS = 60 * 60 * 24 * 30


class Watermark(BaseModel):
    """Where detection stopped on one channel: the last ``ModifiedDateTime`` it processed and the
    ids of the carts it already saw at exactly that instant (keyset paging)."""

    model_config = ConfigDict(populate_by_name=True)

    modified_at: UtcDateTime = Field(alias="modifiedAt")
    ids_at_modified: list[str] = Field(default_factory=list, alias="idsAtModified")
    updated_at: UtcDateTime = Field(alias="updatedAt")


class WatermarkConflictError(Exception):
    """Another run moved the watermark since this run read it."""


class WatermarkStore:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    @staticmethod
    def _partition(oun: str) -> str:
        return f"watermark|{oun}"

    async def load(self, oun: str) -> tuple[Watermark | None, str | None]:
        document = await self._store.read("state", self._partition(oun), "watermark")
        if document is None:
            return None, None
        return Watermark.model_validate(document.body), document.etag

    async def save(self, oun: str, watermark: Watermark, etag: str | None) -> str:
        """Save conditionally on ``etag`` (None: only if no watermark exists yet); returns the new etag."""
        body = watermark.model_dump(mode="json", by_alias=True)
        try:
            if etag is None:
                document = await self._store.create("state", self._partition(oun), "watermark", body)
            else:
                document = await self._store.replace(
                    "state", self._partition(oun), "watermark", body, etag=etag
                )
        except (ConflictError, PreconditionFailedError):
            raise WatermarkConflictError(f"the watermark of channel {oun} was moved by another run") from None
        return document.etag


class RunSummaryStore:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def save(self, run_id: str, summary: dict[str, Any]) -> None:
        await self._store.upsert("state", "runs", run_id, summary, ttl_seconds=RUN_SUMMARY_TTL_SECONDS)

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        documents = await self._store.query(
            "state", partition="runs", order_by="startedAt", descending=True, limit=limit
        )
        return [document.body for document in documents]
