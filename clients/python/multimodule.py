"""multimodule: write a MultiModule exec task in Python (stdlib only).

An exec task is an executable file in a directory given to the daemon with
-p DIR; the file's name is the task's name. It speaks newline-delimited
JSON with the host on stdin/stdout (docs/exec-protocol.md). This module
does the protocol; you write the task:

    #!/usr/bin/env python3
    import multimodule

    class Counter(multimodule.Task):
        stateful = True

        def set_config(self, config):
            self.recur("heartbeat", 5, self.heartbeat)

        def message(self, msg):
            self.state["ct"] = self.state.get("ct", 0) + 1
            msg["ct"] = self.state["ct"]
            self.emit(msg)

        def heartbeat(self):
            self.log("still here", ct=self.state.get("ct", 0))

    multimodule.run(Counter())

Everything the task writes (emits, logs, state) is sent with the
acknowledgement of the request being handled, in one write (with protocol
2 the host may send several requests at once: they are all handled, in
order, and their answers sent together). The state of a
stateful task (self.state, a dict) is sent back whenever a request changed
it. An exception in a handler fails that request only (the host reports it);
print() output would break the protocol, so it is sent to stderr, which the
host copies to its log channel.
"""

import json
import os
import sys
import time
import traceback

PROTOCOLS = [1, 2]

#: During a burst of requests, answers are written at least this often
#: (seconds), so that the host sees each ack well within its timeout.
FLUSH_EVERY = 0.05

__all__ = ["Task", "run", "PROTOCOLS"]


class Task:
    """Base class of a task. Override message(); the rest is optional."""

    #: Set True in a subclass whose state must survive restarts.
    stateful = False

    def __init__(self):
        self.name = os.environ.get("MULTIMODULE_TASK") or os.path.basename(sys.argv[0])
        self.process = os.environ.get("MULTIMODULE_PROCESS", "")
        self.config = {}
        self.state = {}
        self.protocol = None
        self._pending = []
        self._recurs = {}

    # --- handlers (override) -------------------------------------------
    def message(self, msg):
        """Called once per message (a dict)."""

    def set_config(self, config):
        """Called with the task's config at start and on every change.
        Raise to reject a new config (the previous one stays)."""

    # --- what a task can do --------------------------------------------
    def emit(self, msg):
        """Send msg (a dict) to the Router."""
        self._write({"type": "emit", "message": msg})

    def send(self, queue, msg, destination=None):
        """Send msg straight to a queue (on another host: destination)."""
        rec = {"type": "send", "queue": queue, "message": msg}
        if destination:
            rec["destination"] = destination
        self._write(rec)

    def out(self, channel, text, **details):
        """Write to an out-of-band channel (log, debug, alert, error, …)."""
        rec = {"type": "out", "channel": channel, "text": str(text)}
        if details:
            rec["details"] = details
        self._write(rec)

    def log(self, text, **details):
        self.out("log", text, **details)

    def debug(self, text, **details):
        self.out("debug", text, **details)

    def alert(self, text, **details):
        self.out("alert", text, **details)

    def error(self, text, **details):
        self.out("error", text, **details)

    def recur(self, name, seconds, fn):
        """Run fn() every `seconds` (the config's intervals.<name> overrides
        it); one schedule per name however often this is called."""
        self._recurs[name] = fn
        self._write({"type": "recur", "name": name, "interval": seconds})

    def del_recurs(self):
        """Cancel every schedule of this task."""
        self._recurs.clear()
        self._write({"type": "del_recurs"})

    def save_state(self):
        """Send self.state now (done automatically after each request)."""
        self._write({"type": "state", "state": self.state})

    def _write(self, rec):
        self._pending.append(json.dumps(rec, separators=(",", ":")))


def run(task):
    """Speak the protocol on stdin/stdout until stdin ends."""
    out = sys.stdout.buffer
    infd = sys.stdin.fileno()
    # Stray print()s must not corrupt the protocol stream.
    sys.stdout = sys.stderr
    hello = {"type": "hello", "name": task.name, "protocol": PROTOCOLS, "stateful": bool(task.stateful)}
    out.write(json.dumps(hello, separators=(",", ":")).encode() + b"\n")
    out.flush()
    if os.environ.get("MULTIMODULE_MODE") == "describe":
        return
    pending = task._pending
    synced = [None]
    parts = []  # the start of a line not complete yet

    def flush():
        out.write(("\n".join(pending) + "\n").encode())
        out.flush()
        pending.clear()

    while True:
        # Everything the host has written so far is read at once and
        # handled, and the answers go back in one write before the next
        # wait (protocol 2 lets the host have several requests in flight);
        # during a long burst, at least every FLUSH_EVERY seconds.
        chunk = os.read(infd, 1 << 16)
        if not chunk:
            rest = b"".join(parts)
            if rest.strip():
                _handle(task, rest, synced)
            break
        if b"\n" not in chunk:
            parts.append(chunk)
            continue
        if parts:
            parts.append(chunk)
            chunk = b"".join(parts)
            parts = []
        lines = chunk.split(b"\n")
        if lines[-1]:
            parts.append(lines[-1])
        del lines[-1]
        flushed = time.monotonic()
        for line in lines:
            if line.strip():
                _handle(task, line, synced)
            if pending and time.monotonic() - flushed > FLUSH_EVERY:
                flush()
                flushed = time.monotonic()
        if pending:
            flush()
    if pending:
        flush()


def _handle(task, line, synced):
    """Handle one request line; its records and ack go to task._pending."""
    try:
        req = json.loads(line)
    except ValueError as e:
        sys.stderr.write("multimodule.py: unreadable line from the host: %s\n" % e)
        return
    typ = req.get("type")
    rid = req.get("id")
    if typ == "welcome":
        task.protocol = req.get("protocol")
        return
    if typ == "error":
        sys.stderr.write("multimodule.py: the host refused us: %s\n" % req.get("text"))
        sys.exit(1)
    err = None
    try:
        if typ == "message":
            task.message(req.get("message") or {})
        elif typ == "state":
            task.state = req.get("state") or {}
            synced[0] = json.dumps(task.state, sort_keys=True)
        elif typ == "config":
            cfg = req.get("config") or {}
            task.set_config(cfg)
            task.config = cfg
        elif typ == "tick":
            fn = task._recurs.get(req.get("name"))
            if fn is not None:
                fn()
        else:
            err = "multimodule.py does not know request type %r" % (typ,)
    except Exception as e:  # a handler failure fails this request only
        err = "%s: %s" % (type(e).__name__, e)
        sys.stderr.write(traceback.format_exc())
    if task.stateful and typ != "state":
        now = json.dumps(task.state, sort_keys=True)
        if now != synced[0]:
            synced[0] = now
            task.save_state()
    if rid is None:
        return
    if err is None and type(rid) is int:
        task._pending.append('{"type":"ack","id":%d}' % rid)
    else:
        ack = {"type": "ack", "id": rid}
        if err is not None:
            ack["error"] = err
        task._pending.append(json.dumps(ack, separators=(",", ":")))
