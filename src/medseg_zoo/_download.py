"""Fetching weight files: every byte from the Hub through ``hf_hub_download``, then hash checks.

Hash policy: a pinned sha256 (or the md5 a source publishes) must match; where none is pinned, the first download
that loads correctly records its sha256 in ``<cache root>/hashes.json`` and later loads refuse a changed file.
A file that fails a check is removed from the cache, so a retry downloads it again instead of failing forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import WeightSource
from medseg_zoo.errors import WeightsError

__all__ = ["WeightsError", "cache_root", "evict", "fetch", "reachable", "record_hash", "recorded_hash"]

PROBE_SECONDS = 3.0  # a host that does not answer a TCP connection within this is taken as unreachable
_probed: dict[tuple[str, int], str | None] = {}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The zoo's own cache (hash records, converted weights): ``cache_dir/medseg_zoo`` or ``$HF_HOME/medseg_zoo``."""
    base = Path(cache_dir) if cache_dir is not None else Path(huggingface_hub.constants.HF_HOME)
    return base / "medseg_zoo"


def _hub_cache(cache_dir: str | os.PathLike | None) -> Path | None:
    return Path(cache_dir) / "hub" if cache_dir is not None else None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _records(root: Path) -> dict[str, str]:
    path = root / "hashes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def recorded_hash(source: WeightSource, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The sha256 recorded at a source's first verified download, or ``None`` before it."""
    return _records(cache_root(cache_dir)).get(source.location)


def record_hash(source: WeightSource, sha256: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Record the sha256 of a verified download (first use), atomically."""
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    records = _records(root)
    if records.get(source.location) == sha256:
        return
    records[source.location] = sha256
    atomic_write(root / "hashes.json", lambda tmp: Path(tmp).write_text(json.dumps(records, indent=2)))


def evict(path: Path) -> None:
    """Remove a downloaded file from the Hub cache (the blob and the snapshot link)."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def reachable(url: str) -> str | None:
    """``None`` when a TCP connection to ``url``'s host opens within a few seconds, else why not.

    huggingface_hub retries an unreachable host for ~25 s; this answers in at most ``PROBE_SECONDS``, once per
    host and process.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    if (host, port) not in _probed:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            _probed[host, port] = None
        except OSError as exc:
            _probed[host, port] = f"{host}:{port} cannot be reached ({exc.strerror or type(exc).__name__})"
    return _probed[host, port]


_NO_NETWORK_URL = (
    "download it once on a machine with network access (it is kept in the cache: HF_HOME, or cache_dir), or convert "
    "a copy you downloaded elsewhere with medseg-zoo convert"
)
_NO_NETWORK = (
    "download it once on a machine with network access (it is kept in the cache: HF_HOME, or cache_dir), or set "
    "HF_ENDPOINT to a reachable mirror"
)


def _fetch_url(source: WeightSource, cache_dir: str | os.PathLike | None, local_files_only: bool) -> Path:
    """A file hosted outside the Hub, downloaded once into ``<cache root>/downloads``."""
    url = source.url
    folder = cache_root(cache_dir) / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    path = folder / (Path(urlparse(url).path).name or "download")
    if path.exists():
        return path
    if local_files_only or huggingface_hub.constants.HF_HUB_OFFLINE:
        raise WeightsError(f"{url}: not in the cache and offline mode is on; {_NO_NETWORK_URL}")
    problem = reachable(url)
    if problem:
        raise WeightsError(f"{url}: not in the cache and {problem}; {_NO_NETWORK_URL}")

    def download(tmp: str) -> None:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, f, 1 << 20)
            if expected is not None and f.tell() != int(expected):
                raise WeightsError(f"{url}: received {f.tell()} of {expected} bytes")

    try:
        return atomic_write(path, download)
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{url}: download failed ({exc})") from None


def fetch(
    source: WeightSource,
    *,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> tuple[Path, str]:
    """Download (or find in the cache) a weight file and check its hashes.

    Returns:
        The local path and its sha256.

    Raises:
        WeightsError: Missing repository, revision or file; offline without a cached copy; hash mismatch (the
            file is then removed from the cache).
    """
    if source.url is not None:
        return _verify(_fetch_url(source, cache_dir, local_files_only), source, cache_dir)
    where = f"{source.repo_id} (revision {source.revision}, file {source.filename})"
    problem = None
    if not (local_files_only or huggingface_hub.constants.HF_HUB_OFFLINE):
        problem = reachable(huggingface_hub.constants.ENDPOINT)
        local_files_only = problem is not None  # the cached copy, if any, without ~25 s of retries
    try:
        path = Path(
            hf_hub_download(
                source.repo_id,
                source.filename,
                revision=source.revision,
                cache_dir=_hub_cache(cache_dir),
                token=token,
                local_files_only=local_files_only,
            )
        )
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        why = f"the Hub at {problem}" if problem else "offline mode is on (HF_HUB_OFFLINE or local_files_only)"
        raise WeightsError(f"{where}: not in the cache and {why}; {_NO_NETWORK}") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{where}: the repository does not exist on the Hub (or needs a token)") from None
    except RevisionNotFoundError:
        raise WeightsError(f"{where}: the repository has no revision {source.revision!r}") from None
    except EntryNotFoundError:
        raise WeightsError(f"{where}: the repository has no file {source.filename!r}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"{where}: download failed ({type(exc).__name__}: {exc})") from None

    return _verify(path, source, cache_dir)


def _verify(path: Path, source: WeightSource, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """Check a fetched file against the pinned, published and recorded hashes; evict it on a mismatch."""
    sha256 = file_digest(path, "sha256")
    expected = [("sha256", source.sha256, sha256, "pinned in the registry")]
    if source.md5:
        expected.append(("md5", source.md5, file_digest(path, "md5"), "published by the source"))
    recorded = _records(cache_root(cache_dir)).get(source.location)
    if recorded:
        expected.append(("sha256", recorded, sha256, "recorded at the first verified download"))
    for algorithm, want, got, why in expected:
        if want and want != got:
            evict(path)
            raise WeightsError(
                f"{path}: {algorithm} {got}, expected {want} ({why}); the file is corrupt, truncated or was replaced. "
                "It was removed from the cache; run again to download it afresh."
            )
    return path, sha256
