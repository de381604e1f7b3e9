"""The functions a run compiles, one per (kind, architecture): built once, reused across rounds, shared by the
main thread and the background diagnostics thread (``CompileCache.get`` holds a lock while it builds)."""

from __future__ import annotations

import threading
import typing
from typing import Any, Callable, Literal

from jst.models import specs

# What is cached: a Trainer, or a jitted function of one architecture.
CompiledKind = Literal['trainer', 'eval', 'segment', 'lanes_segment', 'diagnostics']
KINDS: tuple[str, ...] = typing.get_args(CompiledKind)


class CompileCache:
    """``get(kind, spec, build)``: ``build()`` the first time a (kind, spec) is asked for, by any thread; the
    same object afterwards. A build may ask for another entry (a Trainer inside an eval function)."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, specs.ModelSpec], Any] = {}
        self._lock = threading.RLock()

    def get(self, kind: CompiledKind, spec: specs.ModelSpec, build: Callable[[], Any]) -> Any:
        if kind not in KINDS:
            raise ValueError(f'compiled kind {kind!r} is unknown; add it to CompiledKind ({", ".join(KINDS)}).')
        with self._lock:
            if (kind, spec) not in self._built:
                self._built[(kind, spec)] = build()
            return self._built[(kind, spec)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._built)
