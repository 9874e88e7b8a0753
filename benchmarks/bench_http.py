"""HTTP throughput against an OpenAI-compatible loopback server with a fixed latency, vs the bound.

With ``C`` requests in flight and a server that takes ``L`` seconds per request, no client can do better
than ``C / L`` requests per second. Two measurements, each as a fraction of that bound (goal ≥ 90 %):

* **backend** — ``RobustBackend(OpenAIBackend)`` driven by ``C`` concurrent callers, each making
  requests back to back (``generate``, 8 tokens);
* **run** — a whole ``contagion run`` (a child process) whose players are ``openai:...@loopback`` with
  ``concurrency: C``: every game makes its requests one after another, so ``C`` games in flight keep ``C``
  requests in flight. Throughput is counted by the server between the run's first and last request
  (interpreter start-up excluded) and, separately, over the whole command.

Client and server always run in different processes, as in real use (the backend measurement starts
the server in a child; the run measurement runs ``contagion run`` in a child). The loopback server is
an asyncio (aiohttp) server that waits without using CPU, as a model server waiting on its GPU. Run::

    PYTHONPATH=src python benchmarks/bench_http.py [--latency 0.05 0.2] [--concurrency 8 16 32]
        [--run-concurrency 16]

Both latencies by default: 50 ms is a stress test (a tiny model on a fast GPU), 200 ms is closer to a
short chat reply from a real model server.

Numbers depend on the machine and its load (the server and client are Python on the same cores); the
output prints the CPU count and load. What keeps a run below the bound is time between requests, not
bandwidth: ``C`` callers that started together stay in step, so each reply waits while the client (and
the server) handle the other ``C - 1`` of its wave; roughly ``C/2`` times the CPU cost of one request.
The printed "ms beyond the latency" is that cost; it does not grow with the latency, so against a model
server with a realistic latency (hundreds of ms) the fraction of the bound is higher.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

from contagion.backends.base import GenerationConfig
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.robust import RobustBackend
from contagion.messages import Message
from contagion.testing import LoopbackServer
from contagion.testing.loopback import default_responder

ROOT = Path(__file__).resolve().parents[1]
_ACT = re.compile(r"Reply with one word: '([a-z]+)' or '([a-z]+)'")


class Clock:
    """A responder wrapper that notes when each request was answered."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        with self.lock:
            self.times.append(time.monotonic())
        return play(body)


def play(body: dict[str, Any]) -> Any:
    """Trait questions: the default Yes/No reply. Action prompts: log-probs over the two actions."""
    last = next((str(m.get("content", "")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    match = _ACT.search(last)
    if match is None:
        return default_responder(body)
    coop, defect = match.groups()
    h = int(hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:8], 16) / 2**32
    p = 0.2 + 0.6 * h
    top = sorted([{"token": f" {coop}", "logprob": math.log(p)}, {"token": f" {defect}", "logprob": math.log(1 - p)}],
                 key=lambda t: -t["logprob"])
    return str(top[0]["token"]), top


def _machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


async def _drive(backend: RobustBackend, concurrency: int, per_caller: int) -> float:
    config = GenerationConfig(max_tokens=8, temperature=0.0)

    async def caller(i: int) -> None:
        for j in range(per_caller):
            await backend.generate([Message(role="user", content=f"caller {i} request {j}")], config)

    await backend.generate([Message(role="user", content="warm up")], config)  # connection set-up
    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return time.perf_counter() - started


def _serve(conn: Connection, latency: float) -> None:
    """Child process: a loopback server until the parent says stop (so it does not share our GIL)."""
    with LoopbackServer(play, latency=latency) as server:
        conn.send(server.base_url)
        conn.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        conn.send((usage.ru_utime + usage.ru_stime, len(server.requests)))


def bench_backend(latency: float, levels: list[int], seconds: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    for concurrency in levels:
        bound = concurrency / latency
        per_caller = max(5, int(seconds / latency))
        parent, child = ctx.Pipe()
        server = ctx.Process(target=_serve, args=(child, latency), daemon=True)
        server.start()
        try:
            backend = RobustBackend(OpenAIBackend("loopback", parent.recv()), timeout=None)
            cpu = time.process_time()
            wall = asyncio.run(_drive(backend, concurrency, per_caller))
            cpu = time.process_time() - cpu
        finally:
            parent.send("stop")
            server_cpu, served = parent.recv() if parent.poll(10) else (math.nan, 0)
            server.join(10)
        n = concurrency * per_caller
        rate = n / wall
        print(f"[backend] C={concurrency:>3}  latency {latency * 1000:.0f} ms: {rate:8.1f} req/s of bound "
              f"{bound:7.1f} = {100 * rate / bound:5.1f} %   ({n} requests in {wall:.2f} s, "
              f"{1000 * (concurrency / rate - latency):.1f} ms each beyond the latency; client CPU "
              f"{1000 * cpu / n:.2f} ms/request, {100 * cpu / wall:.0f} % of a core; server process CPU "
              f"{1000 * server_cpu / max(served, 1):.2f} ms/request incl. its start-up)"
              f"   goal >= 90 %: {'met' if rate >= 0.9 * bound else 'NOT met'}")


def bench_run(latency: float, concurrency: int, repetitions: int) -> None:
    clock = Clock()
    with LoopbackServer(clock, latency=latency) as server, tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        grid = {
            "name": "http benchmark",
            "models": [f"openai:loopback@{server.base_url}"],
            "games": ["prisoners-dilemma", "chicken", "stag-hunt"],
            "compositions": {"all-default": ["default"] * 3, "scripted-defector": ["default", "default",
                                                                                 "scripted:always-defect"]},
            "interventions": ["none"],
            "rounds": 5,
            "chat_turns": [1],
            "repetitions": repetitions,
            "assessment": {"items": 1, "traits": ["agreeableness", "machiavellianism"]},
            "generation": {"max_tokens": 16},
            "concurrency": concurrency,
        }
        path = Path(tmp) / "grid.yaml"
        path.write_text(yaml.safe_dump(grid))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        started = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = resource.getrusage(resource.RUSAGE_SELF)  # only the server thread runs meanwhile
        proc = subprocess.run([sys.executable, "-m", "contagion", "run", str(path), "--out", str(Path(tmp) / "run"),
                               "--no-progress"], capture_output=True, text=True, env=env, check=False)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        server_cpu = (server_after.ru_utime + server_after.ru_stime) - (server_before.ru_utime + server_before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"contagion run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        times = sorted(clock.times)
    games = 3 * 2 * repetitions
    bound = concurrency / latency
    active = times[-1] - times[0] + latency
    rate = len(times) / active
    print(f"[run]     C={concurrency:>3}  latency {latency * 1000:.0f} ms: {games} games, {len(times):,} requests; "
          f"first to last request {active:.2f} s = {rate:.1f} req/s of bound {bound:.1f} = {100 * rate / bound:.1f} % "
          f"(each request took {1000 * concurrency / rate:.1f} ms, {1000 * (concurrency / rate - latency):.1f} ms "
          "beyond the latency)"
          f"   goal >= 90 %: {'met' if rate >= 0.9 * bound else 'NOT met'}")
    print(f"          whole command incl. interpreter start-up {wall:.2f} s = {len(times) / wall:.1f} req/s "
          f"({100 * len(times) / wall / bound:.1f} % of bound); the run used {cpu:.1f} s CPU "
          f"= {1000 * cpu / len(times):.2f} ms/request, the server {1000 * server_cpu / len(times):.2f} ms/request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.2],
                        help="server seconds per request; each value is measured in turn")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="target duration of each backend measurement")
    parser.add_argument("--run-concurrency", type=int, default=16)
    parser.add_argument("--run-repetitions", type=int, default=16, help="games per cell of the run (6 cells)")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args()
    print(f"machine: {_machine()}")
    for latency in args.latency:
        bench_backend(latency, args.concurrency, args.seconds)
        if not args.skip_run:
            bench_run(latency, args.run_concurrency, args.run_repetitions)
    print(f"machine after: {_machine()}")


if __name__ == "__main__":
    main()
