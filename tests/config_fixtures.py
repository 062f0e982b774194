"""What the configuration and application tests share: a schema shaped like
the seed's MyApp (a `[my_app]` table with a nested `[my_app.Worker]`) and a
helper writing a configuration file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class Worker(BaseModel):
    batch_size: int
    interval: float = 1.0


class MyApp(BaseModel):
    pool_size: int
    debug: bool = False
    Worker: Worker


def write(directory: Path, name: str, text: str) -> Path:
    """Write `text` to `directory/name` and return that path."""
    path = directory / name
    path.write_text(text)
    return path
