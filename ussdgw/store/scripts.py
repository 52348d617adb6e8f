"""The one registry of the store's Lua scripts.

Each script is a file `lua/<name>.lua`, shipped as package data. The registry prepends the one
shared prelude (`lua/prelude.lua`: the D2 rate check and small helpers) to it, names it by the
SHA-1 of the result, and runs it with EVALSHA through the store's pipeline; a Redis that does not
know the script (NOSCRIPT: restarted, or SCRIPT FLUSH) gets it with SCRIPT LOAD and the call is
run again (`ussdgw.store.pipeline`). Nothing else in the store holds Lua.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ussdgw.store.errors import guarded

if TYPE_CHECKING:
    from ussdgw.store.pipeline import AutoPipeline

PRELUDE = "prelude"


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str  # the prelude and the script's own file
    sha: str


def _lua_dir() -> Any:
    return resources.files("ussdgw.store").joinpath("lua")


def script_names() -> list[str]:
    """Every script the store can run (the prelude is part of each, not one of them)."""
    names = (entry.name.removesuffix(".lua") for entry in _lua_dir().iterdir() if entry.name.endswith(".lua"))
    return sorted(name for name in names if name != PRELUDE)


@functools.cache
def load_script(name: str) -> Script:
    """The script `name` as Redis runs it: the prelude, then `lua/<name>.lua`."""
    if name == PRELUDE or "/" in name:
        raise ValueError(f"no script named {name!r}")
    prelude = _lua_dir().joinpath(f"{PRELUDE}.lua").read_text(encoding="utf-8")
    body = _lua_dir().joinpath(f"{name}.lua").read_text(encoding="utf-8")
    source = f"{prelude}\n-- {name}.lua\n{body}"
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


class Scripts:
    """Runs the store's scripts by name through one pipeline."""

    def __init__(self, pipeline: AutoPipeline) -> None:
        self._pipeline = pipeline

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`name`'s reply, in the next batch; Redis away is `StoreUnavailable`."""
        return await guarded(self._pipeline.evalsha(load_script(name), keys, args))

    def submit(self, name: str, keys: Sequence[str], args: Sequence[Any], *, durable: bool = False) -> Any:
        """The same, as a future, for callers that gather several commands into one batch; `durable`
        waits for the configured replicas (`AutoPipeline.wait_replicas`)."""
        return self._pipeline.evalsha(load_script(name), keys, args, durable=durable)
