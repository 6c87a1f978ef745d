"""Content-addressed response cache: one JSON file per entry, plus per-key claims against duplicate requests.

Layout under the cache root:
    v2/<key[:2]>/<key[2:4]>/<key>.json   entries: 65,536 leaf folders, ~30 entries each at 2 million, ~1,500 at 100
                                         million, so no folder grows large enough to slow lookups (ext4/NFS/Lustre)
    <key[:2]>/<key>.json                 entries of the first layout (read only, see get)
    tmp/                                 temp files of writes in progress: one folder to scan for killed writers' files
    claims/<key[:2]>/<key>               "this process is fetching key": created O_CREAT|O_EXCL, removed after put

Why not diskcache/SQLite: SQLite's locking is unreliable on NFS/Lustre, where cluster jobs share this cache.
A file per entry written to a temp file, fsynced, then os.replace()d into place is atomic on POSIX filesystems (NFS
included), needs no locks, and lets any number of processes read and write at once. Two writers of one key write
the same content (the key determines the answer), so last-rename-wins is harmless.
Claims are an optimisation only (correctness never depends on them): exclusive create is atomic on local
filesystems and NFSv3+, a stale claim is taken over, and a lost race only costs a duplicate request.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Iterator
from autointerp.common.io import canonical_json

CACHE_FORMAT = 1
_HEX = "[0-9a-f][0-9a-f]"  # first-layout folders (never "v2", "tmp" or "claims")


def cache_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.entries = self.root / "v2"
        self.tmp = self.root / "tmp"  # inside the root: same filesystem, so the rename into place is atomic
        self.claims = self.root / "claims"
        self._host = socket.gethostname()

    def path_for(self, key: str) -> Path:
        return self.entries / key[:2] / key[2:4] / f"{key}.json"

    def legacy_path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None. Unreadable, torn or foreign files count as a miss.

        Entries of the first layout are read through on a miss rather than migrated: a migration of millions of
        files on a shared filesystem would stall the first job for a long time, race with other jobs starting at
        once and be left half-done by a kill, while the fallback costs one failed open() per miss (which then
        costs a request anyway) and keeps old checkouts sharing the folder working."""
        found = self._read(self.path_for(key), key)
        return found if found is not None else self._read(self.legacy_path_for(key), key)

    @staticmethod
    def _read(path: Path, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
            return None
        response = entry.get("response")
        return response if isinstance(response, dict) else None

    def put(self, key: str, material: dict[str, Any], response: dict[str, Any]) -> Path:
        """Store a successful response atomically. `material` is the key material (it never holds the API key)."""
        path = self.path_for(key)
        entry = {"format": CACHE_FORMAT, "key": key, "created": time.time(), "request": material, "response": response}
        data = canonical_json(entry).encode("utf-8")
        tmp = self.tmp / f"{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # unique: no two writers share one
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask: group members can read
        except FileNotFoundError:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # content durable before the rename makes it visible
            try:
                os.replace(tmp, path)
            except FileNotFoundError:  # first entry of this leaf folder (mkdir only then: one syscall less per put)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def keys(self) -> Iterator[str]:
        """Keys of both layouts; one in both counts once."""
        for top in _subdirs(self.entries):
            for leaf in _subdirs(top):
                yield from _json_stems(leaf)
        for old in sorted(self.root.glob(_HEX)):
            for key in _json_stems(old):
                if not self.path_for(key).exists():
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def remove_stale_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Temp files survive only if a writer was killed mid-write; they are never read, only clutter. One folder
        holds them all, so this is one scan of the writes in progress, cheap enough for every client start."""
        cutoff, n = time.time() - older_than_s, 0
        try:
            it = os.scandir(self.tmp)
        except FileNotFoundError:
            return 0
        with it:
            for e in it:
                try:
                    if e.name.endswith(".tmp") and e.stat().st_mtime < cutoff:
                        os.unlink(e.path)
                        n += 1
                except FileNotFoundError:
                    pass
        return n

    # ------------------------------------------------------------ claims

    def claim_path(self, key: str) -> Path:
        return self.claims / key[:2] / key

    def try_claim(self, key: str, ttl_s: float, stale_mtime: float | None = None) -> float | None:
        """Claim `key` for this process: None if it now holds the claim, else the mtime of the holder's claim.

        A claim is taken over when it is older than `ttl_s`, when its mtime is `stale_mtime` (the caller saw it
        unchanged for a TTL by its own clock: NFS stamps mtimes with the server's clock), or when its holder is a
        process on this host that no longer exists (a killed job restarted on the same machine need not wait)."""
        path = self.claim_path(key)
        for _ in range(4):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                try:
                    with open(path, "rb") as f:
                        mtime, holder = os.fstat(f.fileno()).st_mtime, f.read(300).decode("utf-8", "replace")
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if time.time() - mtime <= ttl_s and mtime != stale_mtime and not self._dead_here(holder):
                    return mtime
                path.unlink(missing_ok=True)  # a lost race here only means two processes send the request
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{self._host} {os.getpid()}")  # the pid now, not at __init__: a forked child is another holder
            return None
        return time.time()  # lost every race: someone holds it now

    def touch_claim(self, key: str) -> None:
        """Mark a held claim as alive (its mtime is what waiters elsewhere judge it by)."""
        try:
            os.utime(self.claim_path(key))
        except FileNotFoundError:
            pass

    def release_claim(self, key: str) -> None:
        self.claim_path(key).unlink(missing_ok=True)

    def _dead_here(self, holder: str) -> bool:
        host, _, pid = holder.partition(" ")
        if host != self._host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:  # EPERM: alive, another user's
            pass
        return False


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return sorted(Path(e.path) for e in it if e.is_dir())
    except FileNotFoundError:
        return []


def _json_stems(folder: Path) -> Iterator[str]:
    if not folder.is_dir():
        return
    with os.scandir(folder) as it:
        for e in it:
            if e.name.endswith(".json") and not e.name.startswith("."):
                yield e.name[:-5]
