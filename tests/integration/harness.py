"""Herald integration harness: real components on loopback, stopped by PID.

Run the suite with Debian's Python (stdlib + python3-aiosmtpd + python3-yaml):

    /usr/bin/python3 tests/integration/run.py [-k PATTERN] [FILE ...]
    HERALD_BIN=bin-san /usr/bin/python3 tests/integration/run.py   # sanitizer build

RUNNER CONVENTIONS (tests/integration/run.py)
  * Every tests/integration/test_*.py is imported (or only the FILEs given);
    every module-level function whose name starts with ``test_`` is a test.
    ``-k PATTERN`` keeps the tests whose name contains PATTERN (several -k:
    any of them).
  * A test takes one argument, ``t``, a :class:`Case` (a test with no
    parameter is called with none). Each test gets a fresh temp dir
    (``t.dir``, tempfile.mkdtemp under /tmp, removed when the test passes,
    kept and printed when it fails) and a unique Redis key prefix
    (``t.prefix``), also reachable as ``harness.current()``.
  * A test fails by raising (``assert``, :func:`check`, :func:`wait_until`
    ...). The runner prints ``PASS name (1.2s)``, ``FAIL name: reason`` or
    ``SKIP name: reason`` (raise :class:`Skip`), then finally
    ``integration: N passed, N failed`` (``, N skipped`` appended when any),
    and exits 1 if any test failed.
  * Every process a test starts through this module (Redis, Smtp, Worker,
    run()) is registered with the current Case; the runner SIGKILLs by PID
    whatever is still alive when the test ends, pass or fail. Children also
    get PR_SET_PDEATHSIG so they die if the runner itself dies.
  * After each test the runner scans the stderr of every Worker and every
    run() for sanitizer reports (ASan / LSan / UBSan); any report fails the
    test.
  * Per-test time limit: 120 s by default, ``@harness.timeout(SECONDS)`` on
    the test function changes it (enforced with SIGALRM).
  * Binaries come from ``$HERALD_BIN`` (default ``bin``), relative to the
    repository root unless absolute: ``bin/herald-worker``,
    ``bin/heraldctl``, ``bin/herald-enqueue``.

API (all stable)
  free_port() -> int                  a free TCP port on 127.0.0.1
  current() -> Case                   the running test's Case
  class Case: .name .dir .prefix, .path(*parts),
      .redis(aof=True) -> Redis (started), .smtp(port=None, start=True,
      **opts) -> Smtp, .worker(env, args=()) -> Worker (started),
      .env(redis, smtp, **overrides) -> dict
  class Redis(port=None): .start(dir, aof=True) -> self, .port, .url, .dir,
      .pid, .cmd(*args) -> bytes|int|list|None (raises RedisError on an
      error reply; reconnects once if the connection broke),
      .pipeline([(args...), ...]) -> [replies], .kill() (SIGKILL),
      .restart() (same port and dir; waits for PING), .stop(), .alive()
  class Smtp(port=None): .start(dir, **opts) -> self where opts are
      reject_rcpt=REGEX, reject_data=REGEX, tempfail_data=REGEX,
      tempfail_times=N, tempfail_reply="CODE TEXT", tempfail_rcpt=REGEX, delay_data=SECONDS, delay_times=N; .port (known
      before start), .dir, .messages() -> [(envelope dict, raw bytes)],
      .count(), .wait_count(n, timeout) -> messages, .ids() -> [X-Herald-Id
      of each accepted message, in order], .events() -> [dict] (every
      connect / rcpt_rejected / data_rejected / data_tempfail /
      data_delayed / data_abandoned / accepted; DATA events carry
      "message_id" and "herald_id"), .restart(**opts) (same port and dir, new
      options), .stop() (SIGTERM), .kill() (SIGKILL), .alive()
      The envelope dict: n, mail_from, rcpt_tos, peer [host, port],
      mail_options, rcpt_options, at.
  class Worker(binary="herald-worker"): .start(env, args=(), log=None) ->
      self, .pid, .log_path, .stop(sig=SIGTERM, timeout=20) -> exit code
      (negative: killed by that signal; SIGKILLs and raises if it does not
      exit in time), .kill(), .wait(timeout) -> exit code, .alive(),
      .logs() -> [dict] (the JSON lines of stderr), .stderr() -> str,
      .wait_log(pred, timeout, what) -> the first log dict with pred(d)
  env(redis, smtp, dir=None, **overrides) -> dict of HERALD_* settings
      (see below; overrides are HERALD_* names, a value of None removes
      it; redis or smtp None: a free port where nothing listens; dir
      defaults to the Case's). Worker.start and run() merge it over os.environ minus every
      HERALD_* variable.
  run(program, *args, env, input=None, timeout=60, check_san=True)
      -> subprocess.CompletedProcess with .stdout / .stderr as str
      (UTF-8, errors replaced) and .stdout_bytes; input may be str or bytes.
      program is "heraldctl", "herald-enqueue" or a path.
  mc_show(env, id) -> dict | None      `heraldctl mc show ID --json`
  Case.postgres() -> str               the libpq URL of a new, empty database
      (postgresql:///DB?host=/socket/dir) on the test process's private
      PostgreSQL 15 cluster (class Postgres): started on first use, reused
      by every test, stopped by PID at exit; raises Skip when PostgreSQL 15
      is not installed
  postgres() -> Postgres               that cluster (started if need be):
      .url(db), .createdb() -> name, .sql(db, query) -> str (psql -At
      output; raises AssertionError on an error), .sock, .dir, .pid
  wait_until(pred, timeout=10, what="...", interval=0.05) -> pred's value
  check(cond, message)                 assert that survives python -O
  make_job(**fields) -> dict           a valid job (unique id) with overrides;
                                       a field set to None is removed
  push(redis, prefix, job, priority="normal")
                                       LPUSH raw: dict -> JSON, str/bytes as is
  queue_key(prefix, priority), processing_key(prefix, worker_id),
  dead_key(prefix), lane_keys(redis, prefix, priority) -> [the lane and
  its staged lists]
  dead(redis, prefix) -> [dict]        the dead-letter list, oldest first
  parse_message(raw) -> email.message.EmailMessage (policy strict)
  tool_path(name) -> absolute path of a Herald binary
  Skip(reason), RedisError, timeout(seconds) decorator, REPO, PY

Stores: the suite runs against either Message Center store (run.py
--store, or HERALD_TEST_STORE): STORE is "sqlite" (default) or
"postgresql". env()'s HERALD_MC follows it — sqlite://<dir>/mc.db, or a
new database on the private PostgreSQL cluster, one per (test, dir), so
two dirs are two stores as with SQLite, dropped when the test ends.
  store_url(dir=None) -> str           that HERALD_MC for dir (case dir)
  alone decorator                      run.py -j runs the test by itself
      (it measures time; a loaded machine would fail it)
  stores(*names) decorator             the test runs only with these stores
      (e.g. file modes of mc.db: @stores("sqlite")); a module-level
      HERALD_STORES = (...) does the same for every test of a file

env() defaults: HERALD_REDIS=redis://127.0.0.1:<port>/0,
HERALD_RELAY=smtp://127.0.0.1:<port>, HERALD_MC=store_url(dir),
HERALD_PREFIX=<case prefix>, HERALD_WORKER_ID=w1, HERALD_RETRY_BASE_S=1,
HERALD_RETRY_CAP_S=2, HERALD_CONNECT_TIMEOUT_S=2, HERALD_SMTP_TIMEOUT_S=3,
HERALD_SHUTDOWN_GRACE_S=10, HERALD_DEFAULT_FROM=notices@platform.test,
HERALD_PLATFORM_NAME=Camp Platform, HERALD_LOG_LEVEL=info.
"""

import atexit
import ctypes
import getpass
import email.parser
import email.policy
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"

# Reports in a process's stderr that fail the test that started it: the
# sanitizers', and the worker's own invariant check (worker/task.c logs a
# task moved in a way its table of states does not list).
SAN_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "runtime error: ",
    "WARNING: AddressSanitizer",
    "illegal task transition",
)


class Skip(Exception):
    """Raise to skip the current test with a reason."""


class RedisError(Exception):
    """An error reply from Redis (its text is the message)."""


def default_helo_name():
    """What SPEC §2 says Herald gives in EHLO without HERALD_HELO_NAME,
    worked out here on its own: the host's fully qualified name, else the
    connection's address literal (the tests connect from 127.0.0.1)."""
    def usable(n):
        return n and "." in n and not n.lower().startswith("localhost")

    host = socket.gethostname()
    if usable(host):
        return host
    try:
        canon = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0,
                                   socket.AI_CANONNAME)[0][3]
    except OSError:
        canon = ""
    return canon if usable(canon) else "[127.0.0.1]"


def check(cond, message):
    if not cond:
        raise AssertionError(message)


STORE = os.environ.get("HERALD_TEST_STORE", "sqlite")
STORES = ("sqlite", "postgresql")


def stores(*names):
    """Decorator: the test runs only when STORE is one of names."""
    for n in names:
        if n not in STORES:
            raise ValueError(f"unknown store {n!r}")

    def deco(fn):
        fn.herald_stores = names
        return fn

    return deco


def alone(fn):
    """Decorator: the test measures time (a loop that never stops, a
    deadline), so run.py -j runs it by itself, after the others."""
    fn.herald_alone = True
    return fn


def timeout(seconds):
    """Decorator: this test's time limit in seconds (default 120)."""

    def deco(fn):
        fn.herald_timeout = seconds
        return fn

    return deco


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except (RedisError, OSError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------- processes

_libc = None


def _pdeathsig():
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Case:
    """One running test: its temp dir, Redis prefix and processes."""

    def __init__(self, name, dir=None, prefix=None):
        self.name = name
        self.dir = dir or tempfile.mkdtemp(prefix="herald-it-", dir="/tmp")
        self.prefix = prefix or ("hit" + uuid.uuid4().hex[:10])
        self.procs = []  # subprocess.Popen objects
        self.san_files = []  # stderr files to scan for sanitizer reports
        self.san_texts = []  # (label, text) captured from run()
        self._n = {}
        self._stores = {}  # dir -> HERALD_MC (PostgreSQL databases to drop)

    def _next(self, kind):
        self._n[kind] = self._n.get(kind, 0) + 1
        return self._n[kind]

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def redis(self, aof=True):
        d = self.path(f"redis{self._next('redis')}")
        os.makedirs(d, exist_ok=True)
        return Redis().start(d, aof=aof)

    def smtp(self, port=None, start=True, **opts):
        d = self.path(f"smtp{self._next('smtp')}")
        s = Smtp(port=port)
        s.dir = d
        if start:
            s.start(d, **opts)
        return s

    def worker(self, env, args=(), binary="herald-worker"):
        return Worker(binary).start(env, args=args)

    def postgres(self):
        """The URL of a new, empty database on the private cluster."""
        return postgres().url(postgres().createdb())

    def store_url(self, dir=None):
        """HERALD_MC for a store in dir (default: the case's dir)."""
        dir = os.path.abspath(dir or self.dir)
        if STORE == "sqlite":
            return f"sqlite://{dir}/mc.db"
        if dir not in self._stores:
            self._stores[dir] = self.postgres()
        return self._stores[dir]

    def drop_stores(self):
        """Drops the PostgreSQL databases store_url() made (at the end)."""
        for url in self._stores.values():
            db = url.split("///", 1)[1].split("?", 1)[0]
            try:
                postgres().sql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            except AssertionError:
                pass
        self._stores.clear()

    def env(self, redis, smtp, **overrides):
        return env(redis, smtp, self.dir, **overrides)

    def register(self, proc):
        self.procs.append(proc)

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    def sanitizer_reports(self):
        out = []
        for f in self.san_files:
            try:
                with open(f, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            if any(p in text for p in SAN_PATTERNS):
                out.append((f, _san_excerpt(text)))
        for label, text in self.san_texts:
            if any(p in text for p in SAN_PATTERNS):
                out.append((label, _san_excerpt(text)))
        return out


def _san_excerpt(text):
    for p in SAN_PATTERNS:
        i = text.find(p)
        if i >= 0:
            start = text.rfind("\n", 0, i) + 1
            return text[start : start + 600]
    return ""


_current = None


def current():
    """The running test's Case (a standalone one when used outside run.py:
    its processes are killed at exit, its dir removed if left empty)."""
    global _current
    if _current is None:
        _current = Case("standalone")
        atexit.register(_standalone_exit, _current)
    return _current


def _standalone_exit(case):
    case.kill_all()
    try:
        os.rmdir(case.dir)
    except OSError:
        pass


def _set_current(case):
    global _current
    _current = case


def _spawn(argv, env=None, stdout=None, stderr=None, cwd=None, stdin=None):
    p = subprocess.Popen(
        argv,
        env=env,
        stdout=stdout,
        stderr=stderr,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=_pdeathsig,
    )
    current().register(p)
    return p


def _signal_wait(proc, sig, timeout):
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(
            f"pid {proc.pid} did not exit within {timeout}s of signal {sig}; killed"
        )


# -------------------------------------------------------------------- ports


class _Port:
    """A port chosen with free_port(). Until someone reads .port (to build
    a setting), a start that loses the port to another process moves to a
    fresh one instead of failing."""

    def _init_port(self, port):
        self._port = port or free_port()
        self._port_flexible = port is None

    @property
    def port(self):
        self._port_flexible = False
        return self._port

    def _retry_port(self, log_text):
        if self._port_flexible and "in use" in log_text.lower():
            self._port = free_port()
            return True
        return False


# -------------------------------------------------------------------- Redis


class _Resp:
    """A tiny RESP2 client over one socket."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode("utf-8")
            elif isinstance(a, (int, float)):
                b = str(a).encode()
            else:
                raise TypeError(f"cannot send {type(a).__name__} to Redis")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def send(self, data):
        self.sock.sendall(data)

    def read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis: truncated reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("redis: truncated bulk reply")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise ConnectionError(f"redis: bad reply type {line[:20]!r}")


def _raise_nested(v):
    if isinstance(v, RedisError):
        raise v
    if isinstance(v, list):
        for x in v:
            _raise_nested(x)
    return v


class Redis(_Port):
    """redis-server on 127.0.0.1:<free port>, --daemonize no, PID kept."""

    def __init__(self, port=None):
        self._init_port(port)
        self.dir = None
        self.aof = True
        self.proc = None
        self._conn = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, dir, aof=True):
        self.dir = os.path.abspath(dir)
        self.aof = aof
        os.makedirs(self.dir, exist_ok=True)
        self._launch()
        return self

    def _launch(self):
        argv = [
            "redis-server",
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "always",
            "--dir", self.dir,
            "--daemonize", "no",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]
        self.proc = _spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._drop()
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                if self._retry_port(tail):
                    return self._launch()
                raise AssertionError(
                    f"redis-server on port {self._port} exited with {self.proc.returncode}: "
                    + tail
                )
            try:
                if self.cmd("PING") == b"PONG":
                    info = self.cmd("INFO", "server").decode("utf-8", "replace")
                    if f"process_id:{self.proc.pid}\r" in info:
                        return
                    self._drop()  # another process holds the port: wait for ours to fail
            except (OSError, ConnectionError, RedisError):
                self._drop()
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self._port} never answered PING")
            time.sleep(0.02)

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return f.read()[-800:]
        except OSError:
            return ""

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _connection(self):
        if self._conn is None:
            self._conn = _Resp("127.0.0.1", self._port)
        return self._conn

    def _roundtrip(self, payload, n):
        for attempt in (0, 1):
            fresh = self._conn is None
            try:
                c = self._connection()
                c.send(payload)
                return [c.read() for _ in range(n)]
            except (OSError, ConnectionError):
                self._drop()
                if attempt == 1 or fresh:
                    raise
        raise AssertionError("unreachable")

    def cmd(self, *args):
        """One command; bytes / int / list / None; raises RedisError."""
        (reply,) = self._roundtrip(_Resp.encode(args), 1)
        return _raise_nested(reply)

    def pipeline(self, commands, chunk=1000):
        """Many commands in one round trip each `chunk`; raises the first error."""
        replies = []
        commands = list(commands)
        for i in range(0, len(commands), chunk):
            part = commands[i : i + chunk]
            payload = b"".join(_Resp.encode(c) for c in part)
            replies.extend(self._roundtrip(payload, len(part)))
        for r in replies:
            _raise_nested(r)
        return replies

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self._drop()
        return _signal_wait(self.proc, signal.SIGKILL, 10)

    def stop(self):
        self._drop()
        if self.alive():
            try:
                self.cmd("SHUTDOWN", "NOSAVE")
            except (OSError, ConnectionError, RedisError):
                pass
            self._drop()
        return _signal_wait(self.proc, signal.SIGTERM, 10)

    def restart(self):
        if self.alive():
            self.kill()
        self._launch()
        return self


# --------------------------------------------------------------------- SMTP


class Smtp(_Port):
    """tests/integration/smtpd.py (aiosmtpd) as a subprocess."""

    OPTS = {
        "reject_rcpt": "--reject-rcpt",
        "reject_data": "--reject-data",
        "tempfail_data": "--tempfail-data",
        "tempfail_times": "--tempfail-times",
        "tempfail_reply": "--tempfail-reply",
        "tempfail_rcpt": "--tempfail-rcpt",
        "tempfail_mail": "--tempfail-mail",
        "delay_data": "--delay-data",
        "delay_times": "--delay-times",
        "tempfail_skip": "--tempfail-skip",
        "max_rcpt": "--max-rcpt",
        "pipelining": "--pipelining",  # a flag: True
    }

    def __init__(self, port=None):
        self._init_port(port)
        self.dir = None
        self.proc = None
        self.opts = {}

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, dir=None, **opts):
        if dir is not None:
            self.dir = os.path.abspath(dir)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="smtp", dir=current().dir)
        os.makedirs(self.dir, exist_ok=True)
        for k in opts:
            if k not in self.OPTS:
                raise TypeError(f"Smtp.start: unknown option {k}")
        self.opts = opts
        argv = [PY, os.path.join(HERE, "smtpd.py"), "--port", str(self._port), "--dir", self.dir]
        for k, v in opts.items():
            if v is True:
                argv.append(self.OPTS[k])
            elif v is not None and v is not False:
                argv += [self.OPTS[k], str(v)]
        log = open(os.path.join(self.dir, "server.log"), "ab")
        try:
            self.proc = _spawn(argv, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                if self._retry_port(tail):
                    return self.start(self.dir, **opts)
                raise AssertionError(
                    f"smtpd on port {self._port} exited with {self.proc.returncode}: "
                    + tail
                )
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=2) as s:
                    banner = s.recv(512)
                    if banner.startswith(b"220") and f"pid {self.proc.pid}".encode() in banner:
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"smtpd on port {self._port} never sent a banner")
            time.sleep(0.02)

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def _numbers(self):
        if not self.dir or not os.path.isdir(self.dir):
            return []
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".json") and name[:-5].isdigit():
                out.append(int(name[:-5]))
        out.sort()
        return out

    def count(self):
        return len(self._numbers())

    def messages(self):
        out = []
        for n in self._numbers():
            with open(os.path.join(self.dir, f"{n}.json"), encoding="utf-8") as f:
                envelope = json.load(f)
            with open(os.path.join(self.dir, f"{n}.eml"), "rb") as f:
                raw = f.read()
            out.append((envelope, raw))
        return out

    def wait_count(self, n, timeout=10):
        wait_until(lambda: self.count() >= n, timeout, f"{n} message(s) at smtpd :{self.port}"
                   f" (have {self.count()})")
        return self.messages()

    def ids(self):
        """X-Herald-Id of every accepted message, in arrival order."""
        out = []
        pat = re.compile(rb"^X-Herald-Id:[ \t]*([^\r\n]*)", re.M | re.I)
        for n in self._numbers():
            with open(os.path.join(self.dir, f"{n}.eml"), "rb") as f:
                raw = f.read()
            head = raw.split(b"\r\n\r\n", 1)[0]
            m = pat.search(head)
            out.append(m.group(1).strip().decode("utf-8", "replace") if m else None)
        return out

    def events(self):
        path = os.path.join(self.dir or "", "events.jsonl")
        out = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        return _signal_wait(self.proc, signal.SIGTERM, 10)

    def kill(self):
        return _signal_wait(self.proc, signal.SIGKILL, 10)

    def restart(self, **opts):
        if self.alive():
            self.stop()
        return self.start(self.dir, **opts)


# ------------------------------------------------------------------- Herald


def tool_path(name):
    if os.sep in name:
        return os.path.abspath(name)
    bindir = os.environ.get("HERALD_BIN", "bin")
    if not os.path.isabs(bindir):
        bindir = os.path.join(REPO, bindir)
    return os.path.join(bindir, name)


def lua_script(name):
    """The text of Redis script `name` exactly as the binaries embed it:
    redis/NAME.lua with its includes expanded, written by the build
    (scripts/embed_lua.sh) to <build>/gen/redis/NAME.lua, <build> being
    build-san for HERALD_BIN=bin-san and build otherwise."""
    bindir = os.environ.get("HERALD_BIN", "bin").rstrip("/")
    build = "build-san" if os.path.basename(bindir) == "bin-san" else "build"
    path = os.path.join(REPO, build, "gen", "redis", name + ".lua")
    with open(path) as f:
        return f.read()


def lua_script_names():
    """Every script the build embeds (redis/*.lua)."""
    return sorted(os.path.basename(p)[:-4] for p in os.listdir(os.path.join(REPO, "redis"))
                  if p.endswith(".lua"))


def _base_env(settings):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for k, v in settings.items():
        if v is not None:
            e[k] = str(v)
    return e


def env(redis, smtp, dir=None, **overrides):
    """HERALD_* settings for one test (see module docstring)."""
    case = current()
    dir = os.path.abspath(dir or case.dir)
    e = {
        "HERALD_REDIS": redis.url if redis is not None else f"redis://127.0.0.1:{free_port()}/0",
        "HERALD_RELAY": f"smtp://127.0.0.1:{smtp.port}" if smtp is not None
        else f"smtp://127.0.0.1:{free_port()}",
        "HERALD_MC": case.store_url(dir),
        "HERALD_PREFIX": case.prefix,
        "HERALD_WORKER_ID": "w1",
        "HERALD_RETRY_BASE_S": "1",
        "HERALD_RETRY_CAP_S": "2",
        "HERALD_CONNECT_TIMEOUT_S": "2",
        "HERALD_SMTP_TIMEOUT_S": "3",
        "HERALD_SHUTDOWN_GRACE_S": "10",
        "HERALD_DEFAULT_FROM": "notices@platform.test",
        "HERALD_PLATFORM_NAME": "Camp Platform",
        "HERALD_LOG_LEVEL": "info",
        # SPF look-ups never leave the machine: a loopback port with no
        # DNS server fails at once (temperror, so the relay path); tests
        # of the SPF path start their own dnsmasq and override this.
        "HERALD_DNS": f"127.0.0.1:{free_port()}",
    }
    for k, v in overrides.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


class Worker:
    """A Herald daemon (bin/herald-worker) with stderr captured to a file."""

    def __init__(self, binary="herald-worker"):
        self.binary = binary
        self.proc = None
        self.log_path = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, env, args=(), log=None):
        case = current()
        exe = tool_path(self.binary)
        if not os.path.exists(exe):
            raise AssertionError(f"{exe} does not exist (build it first)")
        self.log_path = log or case.path(f"worker{case._next('worker')}.log")
        fh = open(self.log_path, "ab")
        try:
            self.proc = _spawn([exe, *args], env=_base_env(env), stdout=fh, stderr=fh,
                               cwd=case.dir)
        finally:
            fh.close()
        case.san_files.append(self.log_path)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker pid {self.proc.pid} still running after {timeout}s")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        return _signal_wait(self.proc, sig, timeout)

    def kill(self):
        return _signal_wait(self.proc, signal.SIGKILL, 10)

    def stderr(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def logs(self):
        out = []
        for line in self.stderr().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict):
                out.append(d)
        return out

    def wait_log(self, pred, timeout=10, what="a log line"):
        def find():
            for d in self.logs():
                try:
                    if pred(d):
                        return d
                except (KeyError, TypeError):
                    pass
            return None

        return wait_until(find, timeout, what)


def run(program, *args, env, input=None, timeout=60, check_san=True):
    exe = tool_path(program)
    if isinstance(input, str):
        input = input.encode("utf-8")
    case = current()
    argv = [exe, *[str(a) for a in args]]
    p = subprocess.Popen(
        argv,
        env=_base_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=case.dir,
        preexec_fn=_pdeathsig,
    )
    case.register(p)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout}s")
    errs = err.decode("utf-8", "replace")
    if check_san:
        case.san_texts.append((" ".join(argv)[:200], errs))
    cp = subprocess.CompletedProcess(argv, p.returncode, out.decode("utf-8", "replace"), errs)
    cp.stdout_bytes = out
    return cp


def mc_show(env, id):
    cp = run("heraldctl", "mc", "show", id, "--json", env=env)
    if cp.returncode == 1:
        return None
    if cp.returncode != 0:
        raise AssertionError(f"heraldctl mc show {id} exited {cp.returncode}: {cp.stderr.strip()}")
    try:
        return json.loads(cp.stdout)
    except ValueError as e:
        raise AssertionError(f"heraldctl mc show {id} --json printed no JSON ({e}): {cp.stdout[:300]!r}")


# --------------------------------------------------------------------- jobs


def queue_key(prefix, priority="normal"):
    return f"{prefix}:queue:{priority}"


def lane_keys(redis, prefix, priority="normal"):
    """A lane's list and its staged lists (<lane>:org:<org>, where a take
    files jobs by organisation before taking them round-robin)."""
    lane = queue_key(prefix, priority)
    return [lane] + sorted(k.decode() for k in redis.cmd("KEYS", lane + ":org:*") or [])


def processing_key(prefix, worker_id="w1"):
    return f"{prefix}:processing:{worker_id}"


def dead_key(prefix):
    return f"{prefix}:dead"


def make_job(**fields):
    job = {
        "id": "job-" + uuid.uuid4().hex[:16],
        "type": "notice",
        "org": "acme",
        "account": "acct-1",
        "from": "billing@acme.test",
        "from_name": "Acme Billing",
        "to": [{"email": "alice@example.test", "name": "Alice Example"}],
        "subject": "Your receipt",
        "text": "Thank you for your payment.\n",
    }
    for k, v in fields.items():
        if v is None:
            job.pop(k, None)
        else:
            job[k] = v
    return job


def push(redis, prefix, job, priority="normal"):
    if isinstance(job, dict):
        job = json.dumps(job, ensure_ascii=False)
    return redis.cmd("LPUSH", queue_key(prefix, priority), job)


def dead(redis, prefix):
    out = []
    for raw in reversed(redis.cmd("LRANGE", dead_key(prefix), 0, -1) or []):
        out.append(json.loads(raw))
    return out


def parse_message(raw):
    return email.parser.BytesParser(policy=email.policy.strict).parsebytes(raw)


# --------------------------------------------------------------- PostgreSQL

PG_BIN = "/usr/lib/postgresql/15/bin"


class Postgres:
    """A private PostgreSQL 15 cluster for this test process.

    One cluster per process (a database per test is cheap; a cluster is
    not): its data directory and unix socket under a fresh temp dir, no
    TCP port (listen_addresses=''), fsync off. initdb refuses root, so as
    root both initdb and the server run as the `postgres` user (runuser),
    the temp dir chowned to it; the bootstrap superuser is named after the
    user running the tests, with trust authentication on the socket, so
    the tests' clients connect without a password.

    Not registered with a Case (the runner kills those after each test):
    stopped by PID at exit (SIGINT, a fast shutdown, then SIGKILL). When
    the runner itself dies, PR_SET_PDEATHSIG takes runuser down and
    `setpriv --pdeathsig KILL` the server under it (its backends follow
    their postmaster); the next run removes a temp dir whose owner is gone.
    """

    def __init__(self):
        self.dir = None
        self.data = None
        self.sock = None
        self.proc = None  # runuser (as root) or the server itself
        self.pid = None  # the postmaster
        self._n = 0

    @staticmethod
    def _as_postgres():
        return os.geteuid() == 0

    def _cmd(self, argv):
        if self._as_postgres():
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    @staticmethod
    def _clean_stale():
        for name in os.listdir("/tmp"):
            if not name.startswith("herald-pg-"):
                continue
            path = os.path.join("/tmp", name)
            try:
                with open(os.path.join(path, "owner.pid")) as f:
                    owner = int(f.read().strip() or "0")
            except (OSError, ValueError):
                continue
            try:
                os.kill(owner, 0)
                continue  # its runner is alive
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:
                continue

    def start(self):
        if not os.path.exists(os.path.join(PG_BIN, "postgres")):
            raise Skip(f"PostgreSQL 15 is not installed ({PG_BIN}; scripts/deps.sh)")
        self._clean_stale()
        self.dir = tempfile.mkdtemp(prefix="herald-pg-", dir="/tmp")
        with open(os.path.join(self.dir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.sock)
        if self._as_postgres():
            pw = pwd.getpwnam("postgres")
            for d in (self.dir, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        log = os.path.join(self.dir, "initdb.log")
        with open(log, "wb") as fh:
            rc = subprocess.call(
                self._cmd([os.path.join(PG_BIN, "initdb"), "-D", self.data,
                           "-U", getpass.getuser(), "--auth=trust", "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync"]),
                stdout=fh, stderr=fh, cwd="/", preexec_fn=_pdeathsig)
        if rc != 0:
            with open(log, errors="replace") as f:
                raise AssertionError(f"initdb exited {rc}: {f.read()[-1500:]}")
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.data,
                "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.sock}",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
                "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
                "-c", "logging_collector=off"]
        if self._as_postgres():
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        log = open(os.path.join(self.dir, "postgres.log"), "ab")
        try:
            self.proc = subprocess.Popen(self._cmd(argv), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd="/",
                                         preexec_fn=_pdeathsig)
        finally:
            log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited {self.proc.returncode}: "
                                     + self._log_tail())
            ready = subprocess.call([os.path.join(PG_BIN, "pg_isready"), "-q", "-h",
                                     self.sock, "-d", "postgres"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if ready == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError("postgres never accepted connections: "
                                     + self._log_tail())
            time.sleep(0.05)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline().strip())
        return self

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def url(self, db):
        return f"postgresql:///{db}?host={self.sock}"

    def createdb(self):
        """A new, empty database (UTF8); its name."""
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self.sql("postgres", f"CREATE DATABASE {name}")
        return name

    def sql(self, db, query):
        """psql -At: the output as text; an error raises AssertionError."""
        cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-At", "-v",
                             "ON_ERROR_STOP=1", "-h", self.sock, "-d", db, "-c", query],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
        if cp.returncode != 0:
            raise AssertionError(f"psql {query!r}: {cp.stderr.decode(errors='replace')}")
        return cp.stdout.decode("utf-8", "replace")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGINT)  # fast shutdown
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in (self.pid, self.proc.pid):
                    try:
                        if pid:
                            os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


_postgres = None


def postgres():
    """The test process's PostgreSQL cluster, started on first use."""
    global _postgres
    if _postgres is None:
        cluster = Postgres()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _postgres = cluster
    return _postgres
