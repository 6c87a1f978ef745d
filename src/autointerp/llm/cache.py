"""Content-addressed response cache: one JSON file per entry.

Why not diskcache/SQLite: SQLite's locking is unreliable on NFS/Lustre, where cluster jobs share this cache.
A file per entry written to a temp file in the same directory, fsynced, then os.replace()d is atomic on POSIX
filesystems (NFS included), needs no locks, and lets any number of processes read and write at once.
Two writers of one key write the same content (the key determines the answer), so last-rename-wins is harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator
from autointerp.common.io import canonical_json

CACHE_FORMAT = 1


def cache_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None. Unreadable, torn or foreign files count as a miss."""
        try:
            entry = json.loads(self.path_for(key).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
            return None
        response = entry.get("response")
        return response if isinstance(response, dict) else None

    def put(self, key: str, material: dict[str, Any], response: dict[str, Any]) -> Path:
        """Store a successful response atomically. `material` is the key material (it never holds the API key)."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "key": key, "created": time.time(), "request": material, "response": response}
        data = canonical_json(entry).encode("utf-8")
        # Unique temp name in the same directory (rename must not cross filesystems); ".tmp" never matches *.json.
        tmp = path.parent / f".{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, so group members can read
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # content durable before the rename makes it visible
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def keys(self) -> Iterator[str]:
        for p in self.root.glob("??/*.json"):
            yield p.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def remove_stale_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Temp files survive only if a writer was killed mid-write; they are never read, only clutter."""
        cutoff, n = time.time() - older_than_s, 0
        for p in self.root.glob("??/.*.tmp"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n
