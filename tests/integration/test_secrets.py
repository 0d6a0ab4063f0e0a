"""Secrets at rest in a running worker and on disk (issue 8, hardening).

- A scheme password the worker opened (and used) is not in a core dump of
  it: the clear password lives only in pages excluded from dumps
  (MADV_DONTDUMP, common/seal.c), is not copied per job, and the AUTH
  buffers that carry it are wiped. Checked with `gcore` on a live worker
  that delivered through the scheme (SMTP AUTH) and, when dovecot is
  installed, copied the message to the scheme's IMAP Sent folder. gdb's
  gcore also writes mappings with no access, which an AddressSanitizer
  build reserves by the terabyte (it filled a disk): for such a process
  the same mappings a core dump holds (readable, not MADV_DONTDUMP) are
  read from /proc/PID/mem instead (_image).
- A key file readable by other users is refused (exit 2, naming
  HERALD_SECRET_KEY_FILE); one readable by its group is accepted with a
  warning.
- The Message Center's SQLite file (and its -wal / -shm) is created 0600
  and its directory 0700, by the worker and by heraldctl alike.

Real servers: redis-server, tests/integration/tls_smtpd.py for the
organisation's server (STARTTLS + AUTH), dovecot for IMAP, gdb's gcore."""
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading

import harness
from harness import check, mc_show, run, wait_until
from test_scheme_path import ADDR, ORG, job, keyfile, push
from test_tls import TlsSmtp, make_ca

USER = "orguser"


def _password():
    # long, unique, and no ':' (tls_smtpd.py splits --auth at the first)
    return "Hp" + secrets.token_hex(24) + "Zq"


def _needles(pw):
    """Every form of the password that could sit in the worker's memory:
    clear, as SMTP AUTH PLAIN and AUTH LOGIN send it (base64), and as IMAP
    LOGIN sends it (the clear text again)."""
    plain = base64.b64encode(b"\0" + USER.encode() + b"\0" + pw.encode())
    return [("the clear password", pw.encode()),
            ("the AUTH PLAIN string", plain),
            ("the AUTH LOGIN password", base64.b64encode(pw.encode()))]


# gcore's output is capped (RLIMIT_FSIZE) and it runs in a process group
# of its own that is killed on a timeout: a runaway dump must never fill
# the disk or outlive the test.
GCORE_MAX = 2 << 30
GCORE_TIMEOUT = 90


def _maps(pid):
    """(start, end, perms, excluded from dumps) of every mapping of pid."""
    out, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split(" ", 2)
            if "-" in head[0] and len(head) > 1 and len(head[1]) == 4:
                lo, hi = head[0].split("-")
                cur = [int(lo, 16), int(hi, 16), head[1], False]
                out.append(cur)
            elif line.startswith("VmFlags:") and cur is not None:
                cur[3] = " dd" in line
    return out


def _gcore_size(pid):
    """What gcore would write: gdb (13) dumps every mapping not excluded
    from dumps, even those with no access at all: an AddressSanitizer
    process reserves terabytes so."""
    return sum(hi - lo for lo, hi, _, dd in _maps(pid) if not dd)


def _gcore(t, pid):
    """The bytes of a core file of the live process `pid`, made by gcore
    (which stops it while it dumps, then lets it run on)."""
    gcore = shutil.which("gcore")
    if gcore is None:
        raise harness.Skip("gcore (gdb) is not installed")
    import resource
    prefix = t.path("core")
    path = "%s.%d" % (prefix, pid)

    def limits():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_FSIZE, (GCORE_MAX, GCORE_MAX))

    p = subprocess.Popen([gcore, "-o", prefix, str(pid)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         preexec_fn=limits)
    t.register(p)
    try:
        out, _ = p.communicate(timeout=GCORE_TIMEOUT)
        text = out.decode("utf-8", "replace")
        if p.returncode != 0 or not os.path.exists(path):
            if "ptrace" in text or "Operation not permitted" in text:
                raise harness.Skip("gcore may not attach here (ptrace): %s"
                                   % text.strip()[-200:])
            raise AssertionError("gcore failed (%d): %s" % (p.returncode, text[-500:]))
        check(os.path.getsize(path) < GCORE_MAX, "gcore hit its size cap: %s" % text[-300:])
        with open(path, "rb") as f:
            return f.read()
    except subprocess.TimeoutExpired:
        raise AssertionError("gcore did not finish within %d s" % GCORE_TIMEOUT)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # gdb too, if still there
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()
        if os.path.exists(path):
            os.unlink(path)


def _mem_image(pid):
    """What a kernel core dump of `pid` holds (every readable mapping that
    is not excluded from dumps, "dd" in smaps), read through /proc/PID/mem
    while the process is stopped: for a process gcore cannot dump in
    reasonable space (an AddressSanitizer build, see _gcore_size)."""
    chunks = []
    os.kill(pid, signal.SIGSTOP)
    try:
        with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
            for lo, hi, perms, dd in _maps(pid):
                if dd or perms[0] != "r":
                    continue
                a = lo
                while a < hi:
                    n = min(hi - a, 1 << 20)
                    try:
                        mem.seek(a)
                        chunks.append(mem.read(n))
                    except OSError:  # [vvar], [vsyscall]: not readable
                        pass
                    a += n
    except PermissionError as e:
        raise harness.Skip("may not read the worker's memory here (ptrace): %s" % e)
    finally:
        os.kill(pid, signal.SIGCONT)
    return b"".join(chunks)


def _image(t, pid):
    """What a core dump of the worker would hold: gcore's file, or when
    gcore would write more than GCORE_MAX (AddressSanitizer), the same
    mappings read from /proc/PID/mem."""
    if _gcore_size(pid) < GCORE_MAX:
        return _gcore(t, pid)
    return _mem_image(pid)


def _scan(data, needles, control):
    """Which needles the dump holds; `control` (bytes the worker surely
    holds) must be found, or the scan proves nothing."""
    check(control in data, "the dump lacks the scheme's sealed token: it "
          "does not hold the worker's heap, so the scan proves nothing")
    return ["%s (%d copies)" % (name, data.count(n)) for name, n in needles if n in data]


def _sealed(r, t):
    v = r.cmd("HGET", t.prefix + ":schemes", "%s/%s" % (ORG, ADDR))
    return json.loads(v)["password"].encode()


def _add_scheme(e, port, pw, *extra):
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", port, "--username", USER,
             "--password-stdin", "--tls", "starttls", *extra, env=e, input=pw + "\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)


@harness.timeout(180)
def test_opened_scheme_password_is_not_in_a_core_dump(t):
    """Two jobs delivered through a scheme (STARTTLS, AUTH): the worker's
    core holds no form of the password, though it holds the sealed token
    (the scheme table is there; the clear password is not)."""
    pw = _password()
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, pw))
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t))
    _add_scheme(e, org.port, pw)
    w = t.worker(e)
    push(r, t, job("core-1"))
    wait_until(lambda: len(org.messages()) == 1, 20, "delivery through the scheme")
    check(org.messages()[0][0]["auth_user"] == USER, "the scheme's login was not used")
    wait_until(lambda: (mc_show(e, "core-1") or {}).get("status") == "sent", 10, "record sent")
    # a second job: the table and a per-job route both held the password
    push(r, t, job("core-2"))
    wait_until(lambda: len(org.messages()) == 2, 20, "second delivery")
    wait_until(lambda: (mc_show(e, "core-2") or {}).get("status") == "sent", 10, "record sent")
    found = _scan(_image(t, w.pid), _needles(pw), _sealed(r, t))
    check(w.alive(), "the worker died while it was dumped")
    check(found == [], "the core dump of the worker holds %s" % ", ".join(found))
    check(w.stop() == 0, "exit code")


class HeldSmtp:
    """The organisation's SMTP server, in this process: STARTTLS (required
    before AUTH), AUTH PLAIN and LOGIN for one user, and the reply to each
    message's end held until release(), so that a job holds its route
    while the test changes the scheme. Daemon threads; close() stops it."""

    def __init__(self, cert, key, user, password):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.user, self.password = user.encode(), password.encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.held = threading.Event()     # a message's end arrived
        self.released = threading.Event()
        self.messages, self.logins = [], []
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self):
        self.released.set()

    def close(self):
        self.released.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self._session(conn)
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _session(self, conn):
        rf = conn.makefile("rb")
        tls = authed = False

        def say(line):
            conn.sendall(line.encode() + b"\r\n")

        def read():
            line = rf.readline(65536)
            if not line:
                raise ValueError("closed")
            return line.rstrip(b"\r\n")

        say("220 held.test ESMTP")
        while True:
            line = read()
            verb = line.split(b" ", 1)[0].upper()
            arg = line[len(verb) + 1:]
            if verb in (b"EHLO", b"HELO"):
                say("250-held.test")
                say("250 AUTH PLAIN LOGIN" if tls else "250 STARTTLS")
            elif verb == b"STARTTLS" and not tls:
                say("220 2.0.0 go ahead")
                conn = self.ctx.wrap_socket(conn, server_side=True)
                rf = conn.makefile("rb")
                tls = True
            elif verb == b"AUTH" and tls:
                mech, _, first = arg.partition(b" ")
                if mech.upper() == b"PLAIN":
                    if not first:
                        say("334 ")
                        first = read()
                    _, user, pw = base64.b64decode(first).split(b"\0", 2)
                elif mech.upper() == b"LOGIN":
                    say("334 VXNlcm5hbWU6")
                    user = base64.b64decode(read())
                    say("334 UGFzc3dvcmQ6")
                    pw = base64.b64decode(read())
                else:
                    say("504 5.5.4 unknown mechanism")
                    continue
                authed = user == self.user and pw == self.password
                self.logins.append(authed)
                say("235 2.7.0 ok" if authed else "535 5.7.8 credentials refused")
            elif verb == b"MAIL":
                say("250 2.1.0 ok" if authed else "530 5.7.0 authenticate first")
            elif verb == b"RCPT":
                say("250 2.1.5 ok")
            elif verb == b"DATA":
                say("354 go ahead")
                data = []
                while True:
                    l = rf.readline(1 << 20)
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    data.append(l)
                self.messages.append(b"".join(data))
                self.held.set()
                self.released.wait(60)
                say("250 2.0.0 queued")
            elif verb in (b"RSET", b"NOOP"):
                say("250 2.0.0 ok")
            elif verb == b"QUIT":
                say("221 2.0.0 bye")
                return
            else:
                say("502 5.5.2 not here")


def _loads(w):
    return sum(1 for d in w.logs() if d.get("msg") == "sending schemes loaded")


@harness.timeout(180)
def test_route_outlives_a_scheme_reload_and_the_sent_copy_leaks_nothing(t):
    """A job holds its route (a reference to the scheme's opened password,
    not a copy) while the scheme table is reloaded under it; the
    delivery's IMAP copy then logs in with that same password on a
    thread, after the route is gone. Both work, and afterwards a core
    dump holds no form of the password (curl's own copies included)."""
    import pwd
    from test_scheme_test import Dovecot
    pw = _password()
    ca, crt, key = make_ca(t)
    dv = Dovecot(t, crt, key, USER, pw)
    nobody = pwd.getpwnam("nobody")
    maildir = os.path.join(t.path("dovecot"), "mail", USER)
    for sub in ("", "/cur", "/new", "/tmp", "/.Sent", "/.Sent/cur", "/.Sent/new",
                "/.Sent/tmp"):
        os.makedirs(maildir + sub, exist_ok=True)
        os.chown(maildir + sub, nobody.pw_uid, nobody.pw_gid)
    org = HeldSmtp(crt, key, USER, pw)
    try:
        r = t.redis()
        relay = t.smtp()
        e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t),
                  HERALD_SMTP_TIMEOUT_S=30)
        _add_scheme(e, org.port, pw, "--imap-host", "127.0.0.1", "--imap-port",
                    dv.port, "--sent-folder", "Sent")
        w = t.worker(e)
        push(r, t, job("reload-1"))
        check(org.held.wait(20), "the message never reached the organisation's server")
        check(org.logins == [True], "logins: %r" % org.logins)
        # the job is mid-transaction, holding its route: reload the table
        loads = _loads(w)
        cp = run("heraldctl", "scheme", "update", "--org", ORG, "--email", ADDR,
                 "--daily-limit", "1000", env=e)
        check(cp.returncode == 0, "scheme update: %s" % cp.stderr)
        wait_until(lambda: _loads(w) > loads, 10, "the worker to reload its schemes")
        org.release()
        wait_until(lambda: (mc_show(e, "reload-1") or {}).get("status") == "sent", 15,
                   "record sent")

        def copies():
            out = []
            for sub in ("cur", "new"):
                d = os.path.join(maildir, ".Sent", sub)
                out += [os.path.join(d, f) for f in os.listdir(d)]
            return out
        wait_until(lambda: len(copies()) == 1, 20, "a copy in the Sent folder")
        check(b"X-Herald-Id: reload-1" in open(copies()[0], "rb").read(),
              "the Sent copy is not the message")
        w.wait_log(lambda d: d.get("msg") == "copied to the Sent folder", 10,
                   "the copy logged")
        found = _scan(_image(t, w.pid), _needles(pw), _sealed(r, t))
        check(w.alive(), "the worker died while it was dumped")
        check(found == [], "the core dump of the worker holds %s" % ", ".join(found))
        check(w.stop() == 0, "exit code")
        check(pw not in open(w.log_path, errors="replace").read(),
              "the password appeared in the worker's log")
    finally:
        org.close()


def _key_mode(t, name, mode):
    p = t.path(name)
    with open(p, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(p, mode)
    return p


def test_world_readable_key_file_is_refused(t):
    r = t.redis(aof=False)
    shared = _key_mode(t, "shared.key", 0o644)
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=shared)
    w = t.worker(e)
    wait_until(lambda: not w.alive(), 10, "the worker to refuse the key file")
    check(w.proc.wait(5) == 2, "exit code %r, want 2" % w.proc.returncode)
    log = w.stderr()
    check("HERALD_SECRET_KEY_FILE" in log and "readable by other users" in log
          and "0644" in log and "chmod 600" in log, "the refusal should say why: %s" % log)
    # heraldctl refuses it the same way, and stores nothing
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR, "--smtp-host",
             "smtp.acme.test", "--smtp-port", "587", "--username", USER,
             "--password-stdin", env=e, input="pw\n")
    check(cp.returncode == 2 and "HERALD_SECRET_KEY_FILE" in cp.stderr
          and "readable by other users" in cp.stderr and "chmod 600" in cp.stderr,
          "heraldctl: %d %s" % (cp.returncode, cp.stderr))
    check(r.cmd("EXISTS", t.prefix + ":schemes") == 0, "a scheme was stored")
    # readable by its group: accepted, with a warning
    group = _key_mode(t, "group.key", 0o640)
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=group)
    w = t.worker(e)
    w.wait_log(lambda d: d.get("level") == "warn" and "HERALD_SECRET_KEY_FILE" in
               json.dumps(d) and "group" in json.dumps(d), 10, "a warning for the group")
    check(w.alive(), "a group-readable key file stopped the worker")
    check(w.stop() == 0, "exit code")


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_message_center_files_are_private(t):
    """The SQLite store and the directories created for it: 0600 / 0700,
    whether the worker or heraldctl creates it first (umask 022 as usual);
    the -wal and -shm files follow the database file."""
    old = os.umask(0o022)
    try:
        r = t.redis(aof=False)
        relay = t.smtp()
        store = t.path("w", "mc", "mc.db")
        e = t.env(r, relay, HERALD_MC="sqlite://" + store)
        w = t.worker(e)
        push(r, t, json.dumps({"id": "mc-1", "type": "receipt", "org": "pine",
                               "account": "a1", "from": "news@pine.test",
                               "to": ["a@example.test"], "subject": "S", "text": "T"}))
        relay.wait_count(1, 15)
        wait_until(lambda: (mc_show(e, "mc-1") or {}).get("status") == "sent", 10,
                   "record sent")
        check(_mode(t.path("w")) == 0o700 and _mode(t.path("w", "mc")) == 0o700,
              "directories %o %o" % (_mode(t.path("w")), _mode(t.path("w", "mc"))))
        for suffix in ("", "-wal", "-shm"):
            check(os.path.exists(store + suffix), "no %s" % (store + suffix))
            check(_mode(store + suffix) == 0o600,
                  "mc.db%s is %o" % (suffix, _mode(store + suffix)))
        check(w.stop() == 0, "exit code")

        # heraldctl first
        store2 = t.path("c", "mc.db")
        cp = run("heraldctl", "mc", "list", "--json",
                 env=t.env(r, None, HERALD_MC="sqlite://" + store2))
        check(cp.returncode == 0, "mc list: %s" % cp.stderr)
        check(_mode(t.path("c")) == 0o700, "directory %o" % _mode(t.path("c")))
        check(_mode(store2) == 0o600, "mc.db is %o" % _mode(store2))

        # an existing store keeps its mode
        os.chmod(store2, 0o640)
        cp = run("heraldctl", "mc", "list", "--json",
                 env=t.env(r, None, HERALD_MC="sqlite://" + store2))
        check(cp.returncode == 0 and _mode(store2) == 0o640, "mode %o" % _mode(store2))
    finally:
        os.umask(old)


@harness.timeout(180)
def test_relay_password_is_not_in_a_core_dump_nor_the_environment(t):
    """The relay's password comes from the environment only; once the
    worker runs, its one copy is in secret memory: the settings' copy and
    the environment's value are wiped (a core dump and /proc/PID/environ
    show neither)."""
    pw = _password()
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, pw))
    r = t.redis()
    e = t.env(r, None, HERALD_RELAY="smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca,
              HERALD_RELAY_USER=USER, HERALD_RELAY_PASSWORD=pw)
    w = t.worker(e)
    push(r, t, json.dumps({"id": "relay-core-1", "type": "receipt", "org": "pine",
                           "account": "a1", "from": "office@pine.test",
                           "to": ["alice@example.test"], "subject": "s", "text": "t\n"}))
    wait_until(lambda: len(s.messages()) == 1, 20, "delivery through the relay")
    check(s.messages()[0][0]["auth_user"] == USER, "the relay's login was not used")
    with open("/proc/%d/environ" % w.pid, "rb") as f:
        env = f.read()
    check(pw.encode() not in env, "/proc/PID/environ shows the relay password")
    if "san" in os.environ.get("HERALD_BIN", ""):
        # The sanitizer runtime keeps its own copy of the whole environment
        # (it reads /proc/self/environ at start): not the product's memory.
        check(w.stop() == 0, "exit code")
        return
    found = _scan(_image(t, w.pid), _needles(pw), b"notices@platform.test")
    check(found == [], "the core dump of the worker holds %s" % ", ".join(found))
    check(w.stop() == 0, "exit code")
