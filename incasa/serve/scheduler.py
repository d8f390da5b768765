"""A bounded queue per model with micro-batching: compatible requests that arrive together share one sampler call.

    queue = BatchQueue(engine, max_waiting=64, max_batch_images=16, batch_wait_s=0.0)
    queue.start()
    queue.reserve()                   # raises QueueFull when 64 are waiting or being admitted
    future = queue.submit(job, reserved=True)   # concurrent.futures.Future -> Rendered
    ...
    queue.close(timeout=30)           # stop taking work, finish what was accepted, stop the worker

One worker thread per model takes the oldest waiting job, then gathers every waiting job with the same
`engine.batch_key` (same steps, guidance, mode) until the batch holds `max_batch_images` pictures, waiting up to
`batch_wait_s` for more to arrive when it is not full. The default wait is 0: under load, requests pile up while
the previous batch renders, so batches form by themselves without adding latency to a lone request. Jobs with
other keys keep their place for the next batch, so nobody waits behind more than one batch of a different kind
per turn.

Admission control is the bound: with `max_waiting` jobs waiting, `submit` raises `QueueFull` at once with an
estimate of when to come back (the app answers 429 + Retry-After), so overload costs microseconds per rejected
request instead of a growing pile of sockets. A cancelled future (the client's timeout) is skipped, never rendered.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from incasa.serve.engines import ImageEngine, ImageJob, Rendered


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"queue full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ShuttingDown(Exception):
    pass


@dataclass
class _Entry:
    job: ImageJob
    key: tuple
    future: Future
    enqueued: float
    finish: Callable[[Rendered], object] | None = None


BatchHook = Callable[[str, int, int, float], None]  # (model, jobs, images, seconds)


class BatchQueue:
    def __init__(self, engine: ImageEngine, *, max_waiting: int = 64, max_batch_images: int = 16,
                 batch_wait_s: float = 0.0, on_batch: BatchHook | None = None, delivery_threads: int = 2):
        self.engine, self.max_waiting, self.max_images = engine, max_waiting, max_batch_images
        self.batch_wait_s = batch_wait_s
        self.on_batch = on_batch
        self._delivery = ThreadPoolExecutor(delivery_threads, thread_name_prefix=f"deliver-{engine.name}")
        self._waiting: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0  # jobs inside run_batch right now
        self._reserved = 0  # places held by requests between reserve() and submit()
        self._thread: threading.Thread | None = None
        self._batch_s = 1.0  # running mean of one batch's wall time, for Retry-After
        self._jobs_per_batch = 1.0

    # --- the client side -------------------------------------------------------------------------------------

    def start(self) -> None:
        assert self._thread is None, "started twice"
        self._thread = threading.Thread(target=self._work, name=f"batch-{self.engine.name}", daemon=True)
        self._thread.start()

    def reserve(self) -> None:
        """Hold a place before doing a request's admission work (guardrails, decoding); raises QueueFull at once.
        Without it, a burst would pass the depth check all together and only meet the bound after that work."""
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) + self._reserved >= self.max_waiting:
                self._drop_cancelled()
            if len(self._waiting) + self._reserved >= self.max_waiting:
                raise QueueFull(self.retry_after())
            self._reserved += 1

    def release(self) -> None:
        """Give back a reservation whose request was refused before submit."""
        with self._cond:
            assert self._reserved > 0, "release without reserve"
            self._reserved -= 1

    def submit(self, job: ImageJob, *, reserved: bool = False, finish: Callable[[Rendered], object] | None = None
               ) -> Future:
        """Queue a job (in a place taken by reserve() when `reserved`); raises QueueFull or ShuttingDown.
        The future resolves to the Rendered pictures, or to finish(rendered) when `finish` is given: that runs on
        the queue's delivery threads, so the next batch renders while this one is delivered."""
        if not reserved:
            self.reserve()
        try:
            if job.n > self.max_images:
                raise ValueError(f"n={job.n} is more than one batch holds ({self.max_images})")
            entry = _Entry(job, self.engine.batch_key(job), Future(), time.monotonic(), finish)
        except BaseException:
            self.release()
            raise
        with self._cond:
            self._reserved -= 1  # the place is now the entry's
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            self._waiting.append(entry)
            self._cond.notify()
        return entry.future

    def depth(self) -> int:
        """Jobs waiting, plus places reserved by requests still being admitted."""
        return len(self._waiting) + self._reserved

    def in_flight(self) -> int:
        return self.depth() + self._running

    def retry_after(self) -> int:
        """Estimated seconds for the work ahead to drain (mean batch time x batches waiting), in whole seconds
        (the header's unit), between 1 and 60."""
        batches_ahead = max(self.depth() / max(self._jobs_per_batch, 1.0), 1.0)
        return max(1, min(60, math.ceil(self._batch_s * batches_ahead)))

    def close(self, timeout: float = 30.0) -> bool:
        """Refuse new work, let the worker finish everything accepted; True if it finished within `timeout`."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            self._delivery.shutdown(wait=True)
            return True
        self._thread.join(timeout)
        self._delivery.shutdown(wait=True)  # the last batch's deliveries
        return not self._thread.is_alive()

    # --- the worker ------------------------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        self._waiting = deque(e for e in self._waiting if not e.future.cancelled())

    def _take_batch(self) -> list[_Entry] | None:
        """Under the lock: wait for work, then gather a batch (None when closing and drained)."""
        while True:
            while not self._waiting and not self._closing:
                self._cond.wait()
            if not self._waiting:
                return None
            first = self._waiting.popleft()
            if first.future.set_running_or_notify_cancel():
                break
        batch, images = [first], first.job.n
        deadline = time.monotonic() + self.batch_wait_s
        while True:
            for entry in list(self._waiting):
                if entry.key == first.key and images + entry.job.n <= self.max_images:
                    self._waiting.remove(entry)
                    if entry.future.set_running_or_notify_cancel():
                        batch.append(entry)
                        images += entry.job.n
            left = deadline - time.monotonic()
            if images >= self.max_images or left <= 0 or self._closing:
                return batch
            self._cond.wait(left)

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._take_batch()
                if batch is None:
                    return
                self._running = len(batch)
            start = time.perf_counter()
            try:
                results = self.engine.run_batch([e.job for e in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiting client; the worker lives on
                for entry in batch:
                    entry.future.set_exception(e)
            else:
                for entry, result in zip(batch, results, strict=True):
                    if entry.finish is None:
                        entry.future.set_result(result)
                    else:
                        self._delivery.submit(_finish, entry, result)
            seconds = time.perf_counter() - start
            self._batch_s = 0.8 * self._batch_s + 0.2 * seconds
            self._jobs_per_batch = 0.8 * self._jobs_per_batch + 0.2 * len(batch)
            with self._cond:
                self._running = 0
            if self.on_batch is not None:
                self.on_batch(self.engine.name, len(batch), sum(e.job.n for e in batch), seconds)


def _finish(entry: _Entry, rendered: Rendered) -> None:
    try:
        entry.future.set_result(entry.finish(rendered))
    except BaseException as e:  # noqa: BLE001 - handed to the waiting client
        entry.future.set_exception(e)
