"""A local HTTP server speaking the Hugging Face Hub's file protocol, for tests that never touch the network.

It answers ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit`` (40 hex), ``ETag`` (quoted
sha256) and ``Content-Length``, uncompressed; typed 404s through ``X-Error-Code``; ``POST /api/repos/create``;
and 404 for anything else (huggingface_hub asks ``/api/agent-harnesses`` once per fresh HF_HOME).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.files: dict[str, bytes] = {}  # plain downloads under /files/, as from GitHub releases
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _resolve(self, head: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
                if parts[0] == "files":
                    body = hub.files.get("/".join(parts[1:]))
                    return self._send(200 if body is not None else 404, {}, body or b"", head)
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._send(404, {"X-Error-Code": "EntryNotFound"}, b"not found", head)
                repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._send(
                        404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"", head
                    )
                if revision not in hub.repos[repo]:
                    return self._send(
                        404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"", head
                    )
                commit, files = hub.repos[repo][revision]
                if filename not in files:
                    return self._send(
                        404,
                        {
                            "X-Error-Code": "EntryNotFound",
                            "X-Repo-Commit": commit,
                            "X-Error-Message": "Entry not found",
                        },
                        b"",
                        head,
                    )
                body = files[filename]
                headers = {
                    "X-Repo-Commit": commit,
                    "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                }
                self._send(200, headers, body, head)

            def do_HEAD(self) -> None:
                self._resolve(head=True)

            def do_GET(self) -> None:
                self._resolve(head=False)

            def do_POST(self) -> None:
                hub.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                if self.path.startswith("/api/repos/create"):
                    repo_id = (
                        f"{payload.get('organization') or 'user'}/{payload['name']}"
                        if "/" not in payload.get("name", "")
                        else payload["name"]
                    )
                    hub.created.append(repo_id)
                    body = json.dumps({"url": f"{hub.url}/{repo_id}", "name": repo_id}).encode()
                    return self._send(200, {"Content-Type": "application/json"}, body)
                self._send(404, {}, b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish ``files`` as ``revision`` of ``repo_id``; returns the commit hash."""
        commit = hashlib.sha1(f"{repo_id}{revision}{sorted(files)}{len(self.repos)}".encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = (commit, dict(files))
        return commit

    def reset(self) -> None:
        self.repos.clear()
        self.requests.clear()
        self.created.clear()
        self.files.clear()
