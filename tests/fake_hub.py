"""A model hub on loopback, speaking the part of the Hugging Face Hub's HTTP API that
`huggingface_hub` uses to download (repo info, tree, resolve with Range), serving local files.

Failure modes for tests: `gated` (every request 401, as a gated repository without access),
`interrupt` (the first full download of each large file stops halfway), `corrupt_once` (names
of files served with one byte flipped, the first time only)."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .helpers import wait_until

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_MIN_BYTES = 1024  # files at least this large are "LFS" files with a published sha256


class FakeHub:
    def __init__(self, repo: str, folder: Path):
        self.repo = repo
        self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.gated = False
        self.interrupt = False
        self.corrupt_once: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self._interrupted: set[str] = set()
        self._server: uvicorn.Server | None = None

    def entry(self, name: str) -> dict:
        data = self.files[name]
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        info = {"name": name, "size": len(data), "blob": blob, "lfs": None}
        if len(data) >= LFS_MIN_BYTES:
            info["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        return info

    # Routes
    async def model_info(self, request: Request) -> Response:
        siblings = []
        for name in self.files:
            e = self.entry(name)
            sibling = {"rfilename": name, "size": e["size"], "blobId": e["blob"]}
            if e["lfs"]:
                sibling["lfs"] = {**e["lfs"], "pointerSize": 134}
            siblings.append(sibling)
        return JSONResponse(
            {
                "id": self.repo,
                "modelId": self.repo,
                "sha": COMMIT,
                "private": False,
                "gated": "manual" if self.gated else False,
                "siblings": siblings,
            }
        )

    async def tree(self, request: Request) -> Response:
        items = []
        for name in self.files:
            e = self.entry(name)
            item = {"type": "file", "path": name, "size": e["size"], "oid": e["blob"]}
            if e["lfs"]:
                item["lfs"] = {"oid": e["lfs"]["sha256"], "size": e["size"], "pointerSize": 134}
            items.append(item)
        return JSONResponse(items)

    async def resolve(self, request: Request) -> Response:
        name = request.path_params["filename"]
        if name not in self.files:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        data = self.files[name]
        e = self.entry(name)
        etag = e["lfs"]["sha256"] if e["lfs"] else e["blob"]
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
        }
        if e["lfs"]:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(len(data))})
        if name in self.corrupt_once:
            self.corrupt_once.discard(name)
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if rng := request.headers.get("range"):
            start = int(rng.split("=")[1].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        status = 206 if start else 200
        if self.interrupt and e["lfs"] and start == 0 and name not in self._interrupted:
            self._interrupted.add(name)
            return StreamingResponse(
                _broken(body[: len(body) // 2]),
                status_code=status,
                headers={**headers, "Content-Length": str(len(body))},
            )
        return Response(body, status_code=status, headers=headers)

    def app(self) -> Starlette:
        hub = self

        class Gate:
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] == "http":
                    headers = dict(scope["headers"])
                    rng = headers.get(b"range")
                    hub.requests.append(
                        (scope["method"], scope["path"], rng.decode() if rng else None)
                    )
                    if hub.gated:
                        response = Response(
                            "Access to this model is restricted.",
                            status_code=401,
                            headers={
                                "X-Error-Code": "GatedRepo",
                                "X-Error-Message": "Access to this model is restricted.",
                            },
                        )
                        await response(scope, receive, send)
                        return
                await self.app(scope, receive, send)

        routes = [
            Route(f"/api/models/{self.repo}", self.model_info),
            Route(f"/api/models/{self.repo}/revision/{{revision}}", self.model_info),
            Route(f"/api/models/{self.repo}/tree/{{revision}}", self.tree),
            Route(
                f"/{self.repo}/resolve/{{revision}}/{{filename:path}}",
                self.resolve,
                methods=["GET", "HEAD"],
            ),
        ]
        return Gate(Starlette(routes=routes))

    def start(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        wait_until(lambda: self._server.started, timeout=30, interval=0.02, what="the fake hub")
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


async def _broken(part: bytes):
    yield part
    raise ConnectionResetError("the fake hub drops the connection halfway")
