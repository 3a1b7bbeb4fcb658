"""`--jobs N`: this process and N-1 spawned workers running one study's trials together.

Workers are spawned, never forked: polars and SQLAlchemy hold threads and locks that a fork
would copy mid-use. Each worker loads the strategy file and maps the candles (an Arrow file the
parent wrote once), opens its own storage from the same URL, and claims trials from one counter
shared with the others, so the study gets exactly the trials asked for whichever process is
faster. Workers report each finished trial on a queue so the parent draws one progress bar, and
a worker's failure stops the others.
"""

from __future__ import annotations

import queue
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from barfinex_cli.detector.loader import load_strategy_factory
from barfinex_cli.errors import BfxError
from barfinex_cli.kernel.optimize.plan import OptimizeRequest, Window
from barfinex_cli.kernel.optimize.trials import Evaluator, Progress, make_sampler, run_trials

if TYPE_CHECKING:
    import multiprocessing as mp

    import optuna


class SharedClaims:
    """Trials left and trials in flight, shared by the processes of one pool.

    A claim moves one trial from left to in flight in one step (under the `left` lock), so once
    nothing is left and nothing is in flight every trial is stored: a worker still starting up
    then has nothing to do and need not be waited for.
    """

    def __init__(self, left: Any, active: Any) -> None:
        self.left = left
        self.active = active

    def claim(self) -> bool:
        """Return whether one more trial may run (it is then in flight)."""
        with self.left.get_lock():
            if self.left.value <= 0:
                return False
            self.left.value -= 1
            with self.active.get_lock():
                self.active.value += 1
            return True

    def release(self) -> None:
        """Record that a claimed trial finished and is stored."""
        with self.active.get_lock():
            self.active.value -= 1

    def finished(self) -> bool:
        """Return whether every trial was claimed and is stored."""
        with self.left.get_lock(), self.active.get_lock():
            return bool(self.left.value <= 0 and self.active.value <= 0)

    def stop(self) -> None:
        """Grant nothing more: the others stop after their current trial."""
        with self.left.get_lock():
            self.left.value = 0


@dataclass(frozen=True)
class WorkerJob:
    """What a spawned worker needs to join a study (pickled to it)."""

    worker: int
    request: OptimizeRequest
    frame_path: Path
    """The candles as an Arrow IPC file the parent wrote once; the worker maps it."""
    window: Window
    storage: str
    namespace: str
    study: str


def work(job: WorkerJob, claims: SharedClaims, events: mp.Queue[tuple[Any, ...]]) -> None:
    """Worker process entry: load once, run trials while the shared counter grants them.

    Puts ("trial", value | None) after each trial, then ("done",) — or ("error", message,
    exit code) for a mistake the user can fix, ("crash", traceback) for a bug.
    """
    try:
        import optuna

        from barfinex_cli.kernel.optimize.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        factory = load_strategy_factory(job.request.strategy_path)
        frame = pl.read_ipc(job.frame_path)
        evaluator = Evaluator(factory, frame, job.request, job.window)
        study = optuna.load_study(
            study_name=job.study,
            storage=open_storage(job.storage, job.namespace),
            sampler=make_sampler(job.request, job.worker),
        )
        run_trials(evaluator, study, claims, lambda _n, v: events.put(("trial", v)))
        events.put(("done",))
    except BfxError as exc:
        events.put(("error", str(exc), exc.exit_code))
    except BaseException:  # a bug: the parent prints it with the worker's traceback
        events.put(("crash", traceback.format_exc()))


class WorkerFailed(BfxError):
    """A worker process stopped on a mistake the user can fix; carries its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Pool:
    """This process and `len(jobs)` spawned workers running one study's trials together.

    The parent runs trials too (it has the factory and the frame already, so it starts at
    once while the workers import); all of them claim trials from one shared counter, so a
    slow starter simply gets fewer, and none at all if the others finish first: the run ends
    when every trial is stored, not when every worker has started. `close` then stops the
    workers that are still starting and joins the rest, after the parent has moved on.
    """

    evaluator: Evaluator
    study: optuna.Study
    trials: int
    jobs: list[WorkerJob]
    progress: Progress | None
    procs: list[Any] = field(default_factory=list)
    held: tuple[Any, ...] = ()
    """The shared counters and the queue, held until `close`: a worker still starting
    unpickles them, and their semaphores vanish with the last reference here."""

    def run(self) -> None:
        """Run every trial; return when all are done.

        Raises:
            WorkerFailed: A worker stopped on a user mistake (the others are stopped too).
            RuntimeError: A worker crashed (a bug), with its traceback.
        """
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # never fork: polars holds threads
        claims = SharedClaims(context.Value("i", self.trials), context.Value("i", 0))
        events: mp.Queue[tuple[Any, ...]] = context.Queue()
        self.held = (claims, events)
        self.procs = [
            context.Process(target=work, args=(job, claims, events), daemon=True)
            for job in self.jobs
        ]
        for proc in self.procs:
            proc.start()
        done, running = 0, len(self.procs)

        def report(value: float | None) -> None:
            nonlocal done
            done += 1
            if self.progress is not None:
                self.progress(done, value)

        def drain(wait: float | None) -> None:
            nonlocal running
            while True:
                try:
                    event = events.get(timeout=wait) if wait else events.get_nowait()
                except queue.Empty:
                    if wait and not any(p.is_alive() for p in self.procs) and running:
                        codes = [p.exitcode for p in self.procs]
                        raise RuntimeError(
                            f"optimize workers ended without reporting: exit codes {codes}"
                        ) from None
                    return
                if event[0] == "trial":
                    report(event[1])
                elif event[0] == "done":
                    running -= 1
                elif event[0] == "error":
                    raise WorkerFailed(event[1], event[2])
                else:
                    raise RuntimeError(f"an optimize worker crashed:\n{event[1]}")
                if wait and not running:
                    return

        def mine(_done: int, value: float | None) -> None:
            report(value)
            drain(None)  # the workers' trials so far, between two of ours

        try:
            run_trials(self.evaluator, self.study, claims, mine)
            while running and not claims.finished():
                drain(0.2)
            settle = time.monotonic() + 2  # the last trials' events may still be in the pipe
            while running and done < self.trials and time.monotonic() < settle:
                drain(0.1)
        except BaseException:
            claims.stop()
            for proc in self.procs:
                proc.terminate()
            raise

    def close(self) -> None:
        """Stop workers still starting (no trial is left for them); join every worker."""
        for proc in self.procs:
            proc.join(timeout=1)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=30)
        self.held = ()
