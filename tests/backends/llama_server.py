"""llama-cpp-python's own OpenAI-compatible server on the embedded GGUF, started and stopped by a test."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType

from contagion.backends.embedded import embedded_run_path


def _die_with_parent() -> None:
    """In the server's process before exec (Linux): be sent SIGTERM when the test process dies, so a
    test run that is killed leaves no server behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server --model GGUF --logits_all true`` on 127.0.0.1.

    ``--chat_format chat_template.default`` makes the server render the GGUF's own chat template (as
    the ``embedded`` and ``hf:`` backends do) rather than a built-in format it might guess.
    """

    STARTUP_SECONDS = 180.0

    def __init__(self, n_ctx: int = 4096) -> None:
        self.port = free_port()
        self.n_ctx = n_ctx
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, model: str = "smollm2") -> str:
        """The ``openai:`` backend spec of this server."""
        return f"openai:{model}@{self.base_url}"

    def __enter__(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_run_path()),
               "--logits_all", "true", "--chat_format", "chat_template.default", "--n_ctx", str(self.n_ctx),
               "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
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
