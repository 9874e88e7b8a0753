"""Servers for the adapter tests: llama-cpp-python's own OpenAI-compatible server running the embedded
SmolLM2 on 127.0.0.1, and the project's loopback server in front of it recording every request body."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

from contagion.backends.embedded import embedded_run_path
from contagion.testing.loopback import RawResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on the embedded GGUF, started and stopped by a test."""

    STARTUP_SECONDS = 180.0

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_run_path()),
               "--logits_all", "true", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"llama_cpp.server did not answer within {self.STARTUP_SECONDS:.0f} s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def forward_to(base_url: str) -> Callable[[dict[str, Any]], RawResponse]:
    """A loopback responder passing each chat request on to ``base_url`` and its reply back unchanged
    (the loopback server records the request body first)."""

    def responder(body: dict[str, Any]) -> RawResponse:
        request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as reply:
                return RawResponse(reply.status, reply.read(), content_type=reply.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return RawResponse(exc.code, exc.read())

    return responder
