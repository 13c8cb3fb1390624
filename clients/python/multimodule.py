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
acknowledgement of the request being handled, in one write. The state of a
stateful task (self.state, a dict) is sent back whenever a request changed
it. An exception in a handler fails that request only (the host reports it);
print() output would break the protocol, so it is sent to stderr, which the
host copies to its log channel.
"""

import json
import os
import sys
import traceback

PROTOCOLS = [1]

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
    inp = sys.stdin.buffer
    # Stray print()s must not corrupt the protocol stream.
    sys.stdout = sys.stderr
    hello = {"type": "hello", "name": task.name, "protocol": PROTOCOLS, "stateful": bool(task.stateful)}
    out.write(json.dumps(hello, separators=(",", ":")).encode() + b"\n")
    out.flush()
    if os.environ.get("MULTIMODULE_MODE") == "describe":
        return
    synced = None
    for line in inp:
        try:
            req = json.loads(line)
        except ValueError as e:
            sys.stderr.write("multimodule.py: unreadable line from the host: %s\n" % e)
            continue
        typ = req.get("type")
        rid = req.get("id")
        if typ == "welcome":
            task.protocol = req.get("protocol")
            continue
        if typ == "error":
            sys.stderr.write("multimodule.py: the host refused us: %s\n" % req.get("text"))
            sys.exit(1)
        err = None
        try:
            if typ == "state":
                task.state = req.get("state") or {}
                synced = json.dumps(task.state, sort_keys=True)
            elif typ == "config":
                cfg = req.get("config") or {}
                task.set_config(cfg)
                task.config = cfg
            elif typ == "message":
                task.message(req.get("message") or {})
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
            if now != synced:
                synced = now
                task.save_state()
        if rid is None:
            continue
        ack = {"type": "ack", "id": rid}
        if err is not None:
            ack["error"] = err
        task._pending.append(json.dumps(ack, separators=(",", ":")))
        out.write(("\n".join(task._pending) + "\n").encode())
        out.flush()
        task._pending.clear()
