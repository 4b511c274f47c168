"""The process runtime closes what features built on it, sync or async, even when one fails."""

from __future__ import annotations

from shared.runtime import Runtime
from shared.settings import Settings


class Closable:
    def __init__(self, *, fails: bool = False) -> None:
        self.closed = False
        self.fails = fails

    def close(self) -> None:
        if self.fails:
            raise RuntimeError("close failed")
        self.closed = True


class AsyncClosable(Closable):
    async def close(self) -> None:  # type: ignore[override]
        super().close()


async def test_close_closes_every_feature_resource(settings: Settings) -> None:
    runtime = Runtime.create(settings)
    sync, later, broken = Closable(), AsyncClosable(), Closable(fails=True)
    runtime.extras.update({"a": broken, "b": sync, "c": later, "d": object()})
    await runtime.close()
    assert sync.closed and later.closed
    assert runtime.extras == {}
    assert runtime.http.session.closed
