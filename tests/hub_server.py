"""A local stand-in for the Hugging Face Hub's download endpoints, for tests of naiup's hub downloads.

    with FakeHub({"owner/name": {"path/in/repo": b"bytes", ...}}, chunk=2**20, delay=0.05) as hub:
        hub.url          # what HF_ENDPOINT would be (use_hub(monkeypatch, hub, cache) points
                         # huggingface_hub at it, with the cache in a test folder)
        hub.fetched      # ["owner/name:path", ...] every file body served (GET), in order
    chunk/delay: serve file bodies `chunk` bytes at a time, `delay` seconds apart (a slow link, so that
    a test can watch a download in progress).

It answers the three calls huggingface_hub makes for a download, as the real Hub does:
    GET  /api/models/<repo>[/revision/<rev>]?blobs=True    model_info: commit sha + files with sizes
    HEAD /<repo>/resolve/<rev>/<path>                       metadata: X-Repo-Commit, ETag, size
    GET  /<repo>/resolve/<rev>/<path>                       the bytes
so the real client code runs (URLs, cache layout, resume, progress bars); only the network is ours.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def repo_from_folder(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` as {repo path: bytes}."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], chunk: int = 0, delay: float = 0.0) -> None:
        self.repos, self.chunk, self.delay = repos, chunk, delay
        self.fetched: list[str] = []
        self.listed: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet test output
                return None

            def do_GET(self) -> None:  # http.server's naming
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def sha(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()  # a 40-hex commit id, stable per repo

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        if path.startswith("/api/models/"):
            repo = "/".join(path[len("/api/models/") :].split("/")[:2])
            if repo not in self.repos:
                return self._send(
                    req, 404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                )
            self.listed.append(repo)
            siblings = [
                {"rfilename": p, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                for p, data in sorted(self.repos[repo].items())
            ]
            info = {"id": repo, "sha": self.sha(repo), "siblings": siblings}
            return self._send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(req, 404, b"", {}, body)
        repo, file = "/".join(parts[:2]), "/".join(parts[4:])
        data = self.repos.get(repo, {}).get(file)
        if data is None:
            return self._send(req, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        headers = {
            "X-Repo-Commit": self.sha(repo),
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        if body:
            self.fetched.append(f"{repo}:{file}")
        self._send(req, 200, data, headers, body, self.chunk, self.delay)

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        headers: dict,
        body: bool = True,
        chunk: int = 0,
        delay: float = 0.0,
    ) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if not body:
            return
        step = chunk or len(data) or 1
        for start in range(0, len(data), step):
            req.wfile.write(data[start : start + step])
            if delay:
                req.wfile.flush()
                time.sleep(delay)


def use_hub(monkeypatch, hub: FakeHub | None, cache: Path) -> None:
    """Point huggingface_hub at `hub` (None: offline mode, as HF_HUB_OFFLINE=1 makes it) with its cache
    in `cache`. The tests' environment sets HF_HUB_OFFLINE=1 before huggingface_hub is imported, and the
    library reads these settings into its constants module then: the constants are what it consults."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", hub is None)
    if hub is not None:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
