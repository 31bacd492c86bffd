"""A simulated network link between the processes of a session (a simulation, not a network).

This machine has no netem and every session runs over loopback, where a
round costs about 0.3 ms. To measure protocols where they will be deployed
(servers in different data centres, tens of ms apart), a session can run
over a *simulated* link: every message one process sends another (party to
party, party to dealer and back, CrypTen's own traffic, over the plain or the
encrypted channel) is handed to the receiver no earlier than

    send time + bytes / bandwidth (queued behind earlier messages) + latency

with one serialised link per direction (sender, destination): a message waits
for the ones sent before it to that destination to finish transmitting, and
then travels ``latency`` seconds (one way). Nothing else is modelled (no loss,
no jitter, no congestion between different pairs, no TCP slow start); gloo's
data-free barriers and the channel handshake's ephemeral keys are not delayed.

How: the sender copies the message and returns at once (its ``isend`` work is
already complete, as after a real send into a socket buffer); a delivery
thread per destination and process group posts gloo's real send at the
message's due time and waits for it, so the messages to one destination keep
their order. Receives are unchanged: they complete when the delayed send
arrives. The sender thus pays a copy per message (about 10 ms for 40 MB) and
the receiver the loopback time on top of the simulated one.

Configure it with ``PGKERNELS_SIM_LATENCY_S`` (one-way seconds) and
``PGKERNELS_SIM_BANDWIDTH_BPS`` (bytes per second, per direction) in every
process of the session, or ``pgkernels.launch(..., link=Link(latency=0.05,
bandwidth=1.25e8))``, which sets both for every process it starts, the dealer
included. Unset (the default), no link is made and messages take gloo's path
unchanged (no copy, no thread).

What it reveals: nothing; it only delays messages.
"""

import collections
import dataclasses
import math
import os
import threading
import time

import torch
import torch.distributed as dist

LATENCY_ENV = "PGKERNELS_SIM_LATENCY_S"
BANDWIDTH_ENV = "PGKERNELS_SIM_BANDWIDTH_BPS"


@dataclasses.dataclass(frozen=True)
class Link:
    """A simulated link: one-way ``latency`` (s) and ``bandwidth`` (bytes/s per
    direction; None: unlimited)."""

    latency: float = 0.0
    bandwidth: float = None

    def __post_init__(self):
        lat = self.latency
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not (
                math.isfinite(lat) and lat >= 0):
            raise ValueError(f"link latency must be a number of seconds >= 0, got {lat!r}")
        bw = self.bandwidth
        if bw is not None and (isinstance(bw, bool) or not isinstance(bw, (int, float))
                               or not (math.isfinite(bw) and bw > 0)):
            raise ValueError(f"link bandwidth must be a positive number of bytes/s or None, got {bw!r}")

    @property
    def active(self):
        return self.latency > 0 or self.bandwidth is not None

    def env(self):
        """The environment variables that give every process this link."""
        out = {LATENCY_ENV: repr(float(self.latency))}
        out[BANDWIDTH_ENV] = "" if self.bandwidth is None else repr(float(self.bandwidth))
        return out

    @classmethod
    def from_env(cls, environ=None):
        """The link the environment asks for (``Link()``, inactive, when unset)."""
        environ = os.environ if environ is None else environ
        vals = {}
        for field, name in (("latency", LATENCY_ENV), ("bandwidth", BANDWIDTH_ENV)):
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                vals[field] = float(text)
            except ValueError:
                raise ValueError(f"environment variable {name} must be a number, got {text!r}") from None
        return cls(**vals)


class _Done:
    """The sender's work: the message was copied, so it is already complete."""

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return True


class _Lane:
    """Messages to one destination on one process group, in order."""

    def __init__(self, link, dst, group):
        self.link, self.dst, self.group = link, dst, group
        self.queue = collections.deque()
        self.cv = threading.Condition()
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"pgk-link-{dst}", daemon=True)
        self.thread.start()

    def put(self, due, data):
        with self.cv:
            self.queue.append((due, data))
            self.cv.notify()

    def _run(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.busy = False
                    self.cv.notify_all()
                    self.cv.wait()
                self.busy = True
                due, data = self.queue.popleft()
            if data is None:  # close()
                with self.cv:
                    self.busy = False
                    self.cv.notify_all()
                return
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                dist.isend(data, self.dst, group=self.group).wait()
            except Exception as e:  # reported to the sender at its next send or at close
                self.link.error = self.link.error or e

    def drain(self, deadline):
        with self.cv:
            while (self.queue or self.busy) and time.monotonic() < deadline:
                self.cv.wait(max(0.0, min(0.05, deadline - time.monotonic())))


class SimLink:
    """The live link of one process: ``isend`` (torch.distributed's signature)
    delays every message; see the module docstring."""

    def __init__(self, link):
        if not isinstance(link, Link):
            raise TypeError(f"link must be a pgkernels Link, got {type(link).__name__}")
        self.latency = float(link.latency)
        self.bandwidth = None if link.bandwidth is None else float(link.bandwidth)
        self.error = None
        self._lock = threading.Lock()
        self._free_at = {}  # destination -> when its direction finishes transmitting
        self._lanes = {}

    def isend(self, tensor, dst, group=None):
        if self.error is not None:
            raise RuntimeError(f"simulated link: an earlier send failed: {self.error}") from self.error
        data = tensor.detach().clone(memory_format=torch.contiguous_format)  # the sender may reuse its buffer
        nbytes = data.numel() * data.element_size()
        now = time.perf_counter()
        with self._lock:
            start = max(now, self._free_at.get(dst, 0.0))
            done = start + (nbytes / self.bandwidth if self.bandwidth else 0.0)
            self._free_at[dst] = done
            key = (dst, id(group))
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(self, dst, group)
        lane.put(done + self.latency, data)
        return _Done()

    def close(self, timeout=60.0):
        """Deliver what is queued (at most ``timeout`` seconds), then stop the threads."""
        deadline = time.monotonic() + timeout
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.drain(deadline)
        for lane in lanes:
            lane.put(0.0, None)
        for lane in lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))
        self._lanes.clear()


def make(link=None):
    """The process's :class:`SimLink` for ``link`` (from the environment when
    None), or None when no link is asked for."""
    link = Link.from_env() if link is None else link
    if not isinstance(link, Link):
        raise TypeError(f"link must be a pgkernels Link, got {type(link).__name__}")
    return SimLink(link) if link.active else None
