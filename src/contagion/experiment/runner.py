"""The runner: plan what is missing, measure pre-play profiles once, play the games, store each record.

Executors:

* ``local`` — asyncio in this process. Games whose players are all CPU-bound local models
  (``embedded``, ``gguf:``, ``hf:``) run one at a time, each model call using every core; anything
  with a remote model runs ``concurrency`` games at once (default 8) and the robust wrapper limits
  and retries the HTTP calls. A backend that declares how many games are worth having in flight on it
  (``Capabilities.parallel_games``: 1 for the in-process models, which compute one call at a time)
  caps ``concurrency``, and the console says so: more games at once would only be slower.
* ``ray`` — each game is a Ray task (``--address`` of a cluster, or a local Ray started for the run).
  Records come back to this process, which stays the only writer.

Either way the store gets the same records. Ctrl-C stops after the games in flight (a second Ctrl-C
stops at once); rerunning the same command resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from contagion.backends.registry import build, kind_of
from contagion.errors import UserError
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.profiles import ProfileCache, ProfileRecord, ProfileRequest, StoredProfiles, needed_profiles
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.experiment.rundir import RunDir
from contagion.experiment.store import Store
from contagion.experiment.support import Support, tally
from contagion.experiment.trial import failed_record, run_trial

Job = tuple[TrialSpec, dict[str, Any]]
PROFILE_ATTEMPTS = 3
"""Attempts at one pre-play profile (every model call in it is already retried by the robust wrapper)."""


@dataclass
class RunSummary:
    planned: int
    skipped: int
    finished: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    tokens: int = 0
    failures: list[str] = field(default_factory=list)
    replays: int = 0
    """Games finished now whose transcript equals another one finished now (see ``GameRecord.transcript_key``)."""
    support: dict[str, Support] = field(default_factory=dict)
    """backend -> the answer masses the scores of the games finished now rest on (:mod:`.support`)."""

    @property
    def failure_rate(self) -> float:
        done = self.finished + self.failed
        return self.failed / done if done else 0.0


@dataclass
class Plan:
    """What a run still has to do. Jobs are generated when they are needed, never held as a list, so
    memory before the first game does not grow with the grid (a config's grid has no duplicate cells:
    its validation refuses them)."""

    config: ExperimentConfig
    done: set[str]
    pending: int
    skipped: int

    def jobs(self) -> Iterator[Job]:
        """The games still missing from the store (failed ones are tried again), in grid order."""
        for spec, labels in self.config.expand():
            if spec.stable_hash() not in self.done:
                yield spec, labels


def plan(config: ExperimentConfig, store: Store) -> Plan:
    """Count what is stored and what is missing (one pass over the grid, nothing kept but the counts)."""
    done = store.done_hashes()
    skipped = sum(spec.stable_hash() in done for spec, _ in config.expand())
    return Plan(config=config, done=done, pending=config.size() - skipped, skipped=skipped)


def default_concurrency(config: ExperimentConfig) -> int:
    if config.concurrency:
        return config.concurrency
    kinds = [kind_of(m) for m in config.models]
    if all(k.cpu_bound for k in kinds):
        return 1
    if all(k.simulated or k.scripted for k in kinds):
        return 4
    return 8


class _Resumable(UserError):
    """A user error after the run stored something: the message says that a rerun resumes."""


def _user_error(exc: BaseException) -> UserError | None:
    """The user error behind ``exc`` (itself, or the first in a group of parallel tasks' errors), or None."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


class _Made:
    """What a run is about to create in its directory, so a failed start can remove exactly that."""

    def __init__(self, run_dir: Path) -> None:
        self.dirs = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
        self.store = RunDir(run_dir).store
        self.lock = run_dir / RunDir.LOCK
        self.made_store = not self.store.exists()
        self.made_lock = not self.lock.exists()

    def stored(self) -> int | None:
        """Games and profiles in the store (0 when there is none yet; None when it cannot be read)."""
        if not self.store.is_file():
            return 0
        try:
            conn = sqlite3.connect(self.store)  # read-write but only reading: SQLite tidies its journal on close
            try:
                conn.execute("PRAGMA query_only = ON")
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                           for t in ("games", "profiles") if t in tables)
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def undo(self) -> None:
        """Remove the store (and SQLite's journal files), the lock file and the directories this run made."""
        for path in (self.store, self.store.with_name(self.store.name + "-wal"),
                     self.store.with_name(self.store.name + "-shm")):
            if self.made_store:
                path.unlink(missing_ok=True)
        if self.made_lock:
            self.lock.unlink(missing_ok=True)
        for d in self.dirs:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def games_in_flight(config: ExperimentConfig) -> tuple[int, str | None]:
    """How many games the local executor plays at once: ``concurrency`` (or its default), capped by the
    backends' declared ``parallel_games``; with a note for the console when the cap lowers it."""
    wanted = default_concurrency(config)
    capped: list[tuple[int, str]] = []
    for spec in config.backend_specs():
        cap = build(spec).capabilities.parallel_games  # declared by the backend; builds load nothing
        if cap is not None:
            capped.append((cap, spec))
    if not capped:
        return wanted, None
    cap, spec = min(capped)
    if cap >= wanted:
        return wanted, None
    asked = f"concurrency: {wanted} in the config" if config.concurrency else f"the default of {wanted}"
    note = (f"Note: {spec} computes one model call at a time on this machine, so games run {cap} at a time "
            f"here ({asked}): more games in flight cannot be faster, and they re-encode each other's cached "
            "histories.")
    return cap, note


class _Interrupt:
    """First Ctrl-C: finish in-flight games. Second: stop now."""

    def __init__(self, console: Console) -> None:
        self.stopping = False
        self.console = console
        self.tasks: set[asyncio.Task[Any]] = set()

    def __call__(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.console.print("[yellow]Stopping after the games in flight (Ctrl-C again to stop now)…[/]")
        else:
            for t in self.tasks:
                t.cancel()


class Runner:
    def __init__(self, config: ExperimentConfig, run_dir: Path, *, executor: str = "local",
                 address: str | None = None, console: Console | None = None, progress: bool = True,
                 extend: bool = False) -> None:
        if executor not in ("local", "ray"):
            raise UserError(f"unknown executor {executor!r}; choose local or ray")
        self.config = config
        self.run_dir = run_dir
        self.executor = executor
        self.address = address
        self.console = console or Console(stderr=True)
        self.show_progress = progress
        self.extend = extend
        self.personas = config.persona_map()
        self.in_flight = default_concurrency(config)
        """Games (and pre-play profiles) in flight at once; set by :meth:`run` (:func:`games_in_flight`)."""
        self.in_flight_note: str | None = None

    # -- pre-play profiles --------------------------------------------------------------------
    async def _profiles(self, jobs: Iterable[Job], cache: StoredProfiles, on_progress: Callable[[], None],
                        interrupt: _Interrupt) -> None:
        """Measure each distinct pre-play profile the jobs need once, before any game (kept in the store
        across runs), ``concurrency`` at a time. One that fails (after its attempts) does not stop the run:
        the cache keeps its error, and the games that need it are stored as failed with it."""
        todo: dict[str, ProfileRequest] = {}
        for spec, _ in jobs:
            for request in needed_profiles(spec, self.personas):
                if request.key not in todo and cache.get(request.key) is None:
                    todo[request.key] = request
        gate = asyncio.Semaphore(self.in_flight)

        async def one(request: ProfileRequest) -> None:
            async with gate:
                if interrupt.stopping:
                    return
                try:
                    await cache.profile(request)
                except UserError:
                    raise
                except Exception:  # kept in cache.errors: recorded on the games that need it
                    return
            on_progress()

        async with asyncio.TaskGroup() as group:
            for request in todo.values():
                interrupt.tasks.add(group.create_task(one(request)))
        interrupt.tasks.clear()

    def _held_for(self, spec: TrialSpec, cache: ProfileCache) -> dict[str, ProfileRecord]:
        """The profiles a game needs, by key (what a Ray worker's own cache is given)."""
        held = {r.key: cache.get(r.key) for r in needed_profiles(spec, self.personas)}
        return {key: record for key, record in held.items() if record is not None}

    def _profile_error(self, spec: TrialSpec, cache: ProfileCache) -> str | None:
        for request in needed_profiles(spec, self.personas):
            if request.key in cache.errors:
                return cache.errors[request.key]
        return None

    # -- running ------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Every check that can fail on the user's input, before anything is written."""
        self.config.check_resources()
        out = self.run_dir
        if out.exists() and not out.is_dir():
            raise UserError(f"output {out} exists and is not a directory")
        if out.is_dir():
            Store.check(out)
            return
        ancestor = out.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"cannot create the run directory {out}: {ancestor} is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UserError(f"cannot create the run directory {out}: {ancestor} is not writable")

    def run(self) -> RunSummary:
        """Plan, play and store what is missing. A run that fails before anything was stored in a store it
        created removes what it created (the store, its lock file, the run directory if it made it), so a
        failed start leaves nothing behind; once games or profiles are stored they stay, and the error says
        that rerunning resumes."""
        self.preflight()
        if self.executor == "local":  # Ray runs each game in a process of its own
            self.in_flight, self.in_flight_note = games_in_flight(self.config)
        for note in self.config.notes():  # what the run takes other than asked, said before it starts
            self.console.print(f"Note: {note}", style="yellow", highlight=False, markup=False, soft_wrap=True)
        made = _Made(self.run_dir)
        try:
            return self._run_in_dir()
        except BaseException as exc:
            stored = made.stored()
            if made.made_store and stored == 0:
                made.undo()
                raise
            user = _user_error(exc)
            if stored and user is not None and not isinstance(user, _Resumable):
                raise _Resumable(f"{user} ({stored} game(s) and profile(s) stored so far are kept: rerunning the "
                                 "same command resumes)") from None
            raise

    def _run_in_dir(self) -> RunSummary:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write to the run directory {self.run_dir}: {exc.strerror or exc}") from None
        with Store.open(self.run_dir, writer=True) as store:  # the run's one writer, or a clear refusal
            for note in store.recover():  # unreadable rows are moved aside (and played again), and said so
                self.console.print(f"Note: {note}", style="yellow", highlight=False, markup=False)
            store.adopt_config(self.config.model_dump(mode="json"), extend=self.extend)
            todo = plan(self.config, store)
            summary = RunSummary(planned=todo.pending, skipped=todo.skipped)
            if not todo.pending:
                return summary
            return asyncio.run(self._run(todo, store, summary))

    async def _run(self, todo: Plan, store: Store, summary: RunSummary) -> RunSummary:
        started = time.perf_counter()
        if self.in_flight_note:
            self.console.print(self.in_flight_note, style="yellow", highlight=False, markup=False)
        interrupt = _Interrupt(self.console)
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, interrupt)
        except (NotImplementedError, RuntimeError):  # not the main thread (e.g. tests): no handler
            pass
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("failed {task.fields[failed]}"), TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(), console=self.console, disable=not self.show_progress, transient=False,
        )
        with progress:
            pre_task = progress.add_task("pre-play profiles", total=None, failed=0, tps="-")
            cache = StoredProfiles(store, attempts=PROFILE_ATTEMPTS, stopping=lambda: interrupt.stopping)
            await self._profiles(todo.jobs(), cache, lambda: progress.advance(pre_task), interrupt)
            progress.update(pre_task, total=progress.tasks[pre_task].completed or 1,
                            completed=progress.tasks[pre_task].completed or 1)
            games = progress.add_task("games", total=todo.pending, failed=0, tps="-")

            transcripts: set[str] = set()

            def finished(record: GameRecord) -> None:
                store.put(record)
                if record.error:
                    summary.failed += 1
                    summary.failures.append(f"{record.spec_hash}: {record.error}")
                else:
                    summary.finished += 1
                    key = record.transcript_key()
                    summary.replays += key in transcripts
                    transcripts.add(key)
                    tally(record, summary.support)
                summary.tokens += sum(p.prompt_tokens_encoded + p.completion_tokens for p in record.players)
                elapsed = max(1e-9, time.perf_counter() - started)
                progress.update(games, advance=1, failed=summary.failed, tps=f"{summary.tokens / elapsed:,.0f}")

            def runnable() -> Iterator[Job]:
                """The jobs to play; a game whose pre-play profile could not be measured is stored as
                failed with that error (a rerun tries it again)."""
                for spec, labels in todo.jobs():
                    error = self._profile_error(spec, cache)
                    if error is None:
                        yield spec, labels
                    elif not interrupt.stopping:
                        finished(failed_record(spec, labels, error, 0.0))

            if self.executor == "ray":
                await self._run_ray(runnable(), cache, finished, interrupt)
            else:
                await self._run_local(runnable(), cache, finished, interrupt)
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
        summary.interrupted = interrupt.stopping
        summary.seconds = time.perf_counter() - started
        return summary

    async def _run_local(self, jobs: Iterator[Job], cache: ProfileCache, finished: Callable[[GameRecord], None],
                         interrupt: _Interrupt) -> None:
        limit = self.in_flight
        running: set[asyncio.Task[GameRecord]] = set()
        interrupt.tasks = running
        exhausted = False
        try:
            while not exhausted or running:
                while not exhausted and len(running) < limit and not interrupt.stopping:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    spec, labels = job
                    running.add(asyncio.create_task(run_trial(spec, labels=labels, personas=self.personas,
                                                              profiles=cache)))
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.discard(task)
                    if task.cancelled():
                        continue
                    finished(task.result())
        except asyncio.CancelledError:
            for t in running:
                t.cancel()
            interrupt.stopping = True

    async def _run_ray(self, jobs: Iterator[Job], cache: ProfileCache, finished: Callable[[GameRecord], None],
                       interrupt: _Interrupt) -> None:
        from contagion.experiment.ray_executor import RayExecutor

        executor = RayExecutor(self.address)
        try:
            # a task the second Ctrl-C can cancel (the executor then cancels the Ray tasks in flight)
            task = asyncio.create_task(executor.run(jobs, self.personas, lambda spec: self._held_for(spec, cache),
                                                    finished, lambda: interrupt.stopping))
            interrupt.tasks = {task}
            try:
                await task
            except asyncio.CancelledError:
                interrupt.stopping = True
        finally:
            executor.shutdown()
