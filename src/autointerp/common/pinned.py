"""Files fetched once from a pinned URL and trusted only while their SHA-256 matches (the official puzzles, the
paper's released explanation files). Offline (HF_HUB_OFFLINE set) nothing is downloaded: the error says where to
put a local copy."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
from pathlib import Path
from typing import Callable

from autointerp.common.io import atomic_path

log = logging.getLogger("autointerp.common.pinned")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_pinned(url: str, expected: str, target, *, hint: str, download: Callable[[str, float], bytes],
                 fetch_error: type[Exception], checksum_error: type[Exception], what: str,
                 timeout: float = 30.0) -> Path:
    """``target`` once it holds the bytes with SHA-256 ``expected``, downloading ``url`` if it does not.

    The bytes are checked before they are written and again whenever ``target`` is reused, so a stale or
    tampered copy is never trusted (it is downloaded again). ``hint`` (how to supply a local copy) ends every
    error."""
    target = Path(target)
    if target.is_file():
        if sha256_of(target) == expected:
            return target
        log.warning("%s does not match the pinned sha256; downloading it again", target)
    if offline():
        raise fetch_error(f"HF_HUB_OFFLINE is set, so {what} is not downloaded. {hint}")
    try:
        data = download(url, timeout)
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        raise fetch_error(f"could not download {what} ({exc}). {hint}") from exc
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise checksum_error(
            f"{url}: sha256 mismatch: expected {expected}, got {got} ({len(data)} bytes); nothing was cached. "
            f"The download was corrupted or the source changed. {hint}")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target
