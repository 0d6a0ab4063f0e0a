"""`heraldctl scheme test` (SPEC §7; issue 3): the help page's "Test
Connection / Send Test Message" against real servers on free loopback
ports — aiosmtpd with STARTTLS or implicit TLS and AUTH
(tests/integration/tls_smtpd.py) and a real dovecot for IMAP (Debian's
dovecot-imapd, run in the foreground with a config written into the test's
dir). Certificates come from a CA the test makes (test_tls.make_ca) and are
trusted only through HERALD_CA_FILE.

Each step is printed with the server's reply; exit 0 only when every step
passed, 1 naming the failed step, 2 for bad usage. A passing test clears an
auth_failed mark; a failing one leaves it. The password never appears in
the output."""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess

import harness
from harness import check, make_job, mc_show, push, run, wait_until
from test_tls import TlsSmtp, make_ca

PASSWORD = "Sm7p-test-pw-5d1c0a"
USER = "billing"
ORG = "acme"
EMAIL = "billing@acme.test"
SUBJECT = "Herald test message for acme / billing@acme.test"


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


class Dovecot:
    """A real dovecot (IMAP) on two free loopback ports: `port` (STARTTLS,
    ssl = required: no login before TLS) and `imaps_port` (implicit TLS). One
    passwd-file user. Runs as root in the foreground (dovecot -F) and drops
    to dovecot / dovenull / nobody for its own processes."""

    def __init__(self, t, cert, key, user, password):
        if shutil.which("dovecot") is None:
            raise harness.Skip("dovecot not installed (scripts/deps.sh installs dovecot-imapd)")
        if os.geteuid() != 0:
            raise harness.Skip("dovecot needs root to start here")
        for name in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                raise harness.Skip("user %s missing (dovecot-imapd not installed?)" % name)
        nobody = pwd.getpwnam("nobody")
        d = t.path("dovecot")
        os.makedirs(d, exist_ok=True)
        # The mail processes run as nobody: they must reach the mail dir.
        os.chmod(t.dir, 0o711)
        os.chmod(d, 0o711)
        mail = os.path.join(d, "mail")
        os.makedirs(mail, exist_ok=True)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        self.port, self.imaps_port = harness.free_port(), harness.free_port()
        while self.imaps_port == self.port:
            self.imaps_port = harness.free_port()
        users = os.path.join(d, "users")
        with open(users, "w") as f:
            f.write("%s:{PLAIN}%s:%d:%d::%s/%s::\n"
                    % (user, password, nobody.pw_uid, nobody.pw_gid, mail, user))
        os.chmod(users, 0o600)
        self.log = os.path.join(d, "dovecot.log")
        conf = os.path.join(d, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service auth {{
  user = root
}}
service anvil {{
  chroot =
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
""")
        out = open(os.path.join(d, "stdout.log"), "ab")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL)
        t.register(self.proc)
        try:
            wait_until(lambda: _port_open(self.port) and _port_open(self.imaps_port)
                       or self.proc.poll() is not None, 15, "dovecot up")
        except Exception:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError("dovecot exited %s: %s" % (self.proc.returncode, self.log_text()))

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGTERM to the master (its children follow), then wait."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


# tls_smtpd.py --implicit --auth: aiosmtpd's auth_require_tls only counts
# STARTTLS as TLS, so over implicit TLS it never offers AUTH (and then
# refuses MAIL with 530). Until tls_smtpd.py passes auth_require_tls=False
# for --implicit, the implicit case runs it with that one argument patched.
def _key(t):
    path = t.path("secret.key")
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, 0o600)
    return path


def _setup(t, ca=None, **env):
    r = t.redis(aof=False)
    key = _key(t)
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=key, HERALD_SMTP_TIMEOUT_S=10,
              HERALD_CONNECT_TIMEOUT_S=5, HERALD_CA_FILE=ca, **env)
    return r, e


def _add(env, smtp_port, tls="starttls", imap_port=None, password=PASSWORD, email=EMAIL):
    args = ["scheme", "add", "--org", ORG, "--email", email, "--smtp-host", "127.0.0.1",
            "--smtp-port", str(smtp_port), "--username", USER, "--password-stdin", "--tls", tls]
    if imap_port:
        args += ["--imap-host", "127.0.0.1", "--imap-port", str(imap_port)]
    cp = run("heraldctl", *args, env=env, input=password + "\n")
    check(cp.returncode == 0, "scheme add: exit %d: %s" % (cp.returncode, cp.stderr))


def _test(env, *extra, email=EMAIL):
    return run("heraldctl", "scheme", "test", "--org", ORG, "--email", email, *extra, env=env)


def _steps(stdout):
    """{step: (status, reply)} from the printed step lines."""
    names = ("imap connect", "imap tls", "imap login", "connect", "ehlo", "tls", "auth", "send")
    out = {}
    for line in stdout.splitlines():
        for n in names:
            if line.startswith(n + " "):
                rest = line[len(n):].strip()
                status, _, reply = rest.partition(" ")
                out[n] = (status, reply.strip())
                break
    return out


def _no_password(cp, *passwords):
    for pw in passwords:
        check(pw not in cp.stdout and pw not in cp.stderr, "a password was printed")


def _stored(r, t, email=EMAIL):
    raw = r.cmd("HGET", t.prefix + ":schemes", "%s/%s" % (ORG, email.lower()))
    return json.loads(raw)


def _mark_failed(r, t, reason="535 5.7.8 Authentication credentials invalid"):
    field = "%s/%s" % (ORG, EMAIL)
    v = _stored(r, t)
    v["state"], v["state_reason"], v["state_at"] = "auth_failed", reason, "2026-01-02T03:04:05.000Z"
    r.cmd("HSET", t.prefix + ":schemes", field, json.dumps(v, separators=(",", ":")))
    r.cmd("INCR", t.prefix + ":schemes:version")


@harness.timeout(90)
def test_every_step_passes_starttls_imap_and_send(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD))
    dv = Dovecot(t, crt, key, USER, PASSWORD)
    try:
        r, env = _setup(t, ca)
        _add(env, s.port, "starttls", dv.port)
        cp = _test(env, "--send-to", "Ops@Example.test")
        check(cp.returncode == 0, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
        st = _steps(cp.stdout)
        for n in ("connect", "ehlo", "tls", "auth", "send", "imap connect", "imap tls",
                  "imap login"):
            check(st.get(n, ("?",))[0] == "ok", "step %s: %r\n%s" % (n, st.get(n), cp.stdout))
        # each step shows the server's reply
        check(st["connect"][1].startswith("220"), st["connect"])
        check(st["ehlo"][1].startswith("250") and "STARTTLS" in st["ehlo"][1], st["ehlo"])
        check(st["tls"][1].startswith("220") and "TLSv1" in st["tls"][1]
              and "certificate verified" in st["tls"][1], st["tls"])
        check(st["auth"][1].startswith("235"), st["auth"])
        check("250" in st["send"][1] and "queued" in st["send"][1], st["send"])
        check(st["imap connect"][1].startswith("* OK"), st["imap connect"])
        check(st["imap tls"][1].startswith("OK") and "TLSv1" in st["imap tls"][1], st["imap tls"])
        check(st["imap login"][1].startswith("OK"), st["imap login"])
        check("every step passed" in cp.stdout, cp.stdout)
        # the order of the steps: SMTP with STARTTLS, the message, then IMAP
        order = [l.split("  ")[0].strip() for l in cp.stdout.splitlines()
                 if l.split(" ")[0] in ("connect", "ehlo", "tls", "auth", "send", "imap")]
        check(order[:5] == ["connect", "ehlo", "tls", "auth", "send"], order)
        _no_password(cp, PASSWORD)
        # the message arrived, over TLS, after AUTH
        msgs = wait_until(lambda: s.messages(), 5, "the test message")
        check(len(msgs) == 1, "one message, got %d" % len(msgs))
        meta, raw = msgs[0]
        check(meta["tls"] is True and meta["auth_user"] == USER, meta)
        check(meta["mail_from"] == EMAIL and meta["rcpt_tos"] == ["Ops@Example.test"], meta)
        # the EHLO name the worker would give (SPEC §2 HERALD_HELO_NAME)
        check(meta["helo"] == harness.default_helo_name(), meta)
        m = harness.parse_message(raw)
        check(m["Subject"] == SUBJECT, m["Subject"])
        check(m["From"] == "<%s>" % EMAIL or m["From"] == EMAIL, m["From"])
        check("Ops@Example.test" in m["To"], m["To"])
        check(m["Date"] and m["Message-ID"] and m["Message-ID"].endswith("@acme.test>"),
              (m["Date"], m["Message-ID"]))
        check(m.get_content_type() == "text/plain" and "acme" in m.get_content(), raw)
        check(PASSWORD.encode() not in raw, "password in the message")
        # dovecot saw exactly one successful login
        wait_until(lambda: "Login: user=<%s>" % USER in dv.log_text(), 5, "dovecot login logged")
        check(dv.log_text().count("Login: user=<%s>" % USER) == 1, dv.log_text())
        # the state stays ok, nothing to clear
        check(_stored(r, t)["state"] == "ok", _stored(r, t))
        check("cleared" not in cp.stdout, cp.stdout)
    finally:
        dv.stop()


@harness.timeout(60)
def test_wrong_password_fails_at_auth_once_and_sends_nothing(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:the-right-one-77" % USER)
    r, env = _setup(t, ca)
    _add(env, s.port, "starttls")
    cp = _test(env, "--send-to", "ops@example.test")
    check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
    st = _steps(cp.stdout)
    check(st["connect"][0] == "ok" and st["tls"][0] == "ok", st)
    check(st["auth"][0] == "FAILED" and st["auth"][1].startswith("535"), st.get("auth"))
    check("send" not in st, "no send step after a failed AUTH: %r" % st)
    check("FAILED at step 'auth'" in cp.stdout, cp.stdout)
    check("'auth'" in cp.stderr and "535" in cp.stderr, cp.stderr)
    _no_password(cp, PASSWORD, "the-right-one-77")
    attempts = s.auth_attempts()
    check(len(attempts) == 1 and attempts[0]["ok"] is False, attempts)
    check(s.messages() == [], "nothing was sent")
    # a failing test marks nothing and does not touch the stored scheme
    check(_stored(r, t)["state"] == "ok", _stored(r, t))


@harness.timeout(90)
def test_cram_md5_only_server_fails_the_test_as_it_fails_the_worker(t):
    """A server that offers only CRAM-MD5: the worker cannot log in (it
    speaks PLAIN and LOGIN), so the test must not pass either (libcurl
    alone would have logged in with CRAM-MD5 and said "every step
    passed"); the worker, given a job for the scheme, says why it cannot."""
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD), cram_md5_only=True)
    r, env = _setup(t, ca)
    _add(env, s.port, "starttls")
    cp = _test(env, "--send-to", "ops@example.test")
    check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
    st = _steps(cp.stdout)
    check(st["connect"][0] == "ok" and st["tls"][0] == "ok", st)
    check(st["auth"][0] == "FAILED" and "no AUTH mechanism Herald speaks (PLAIN, LOGIN)" in st["auth"][1], st.get("auth"))
    check(s.auth_attempts() == [], "the test tried a login: %r" % s.auth_attempts())
    check(s.messages() == [], "the test sent a message")
    # the worker, on the same scheme
    relay = t.smtp()
    we = dict(env, HERALD_RELAY="smtp://127.0.0.1:%d" % relay.port, HERALD_RETRY_BASE_S="3600")
    w = t.worker(we)
    push(r, t.prefix, make_job(id="cram-1", org=ORG))  # from billing@acme.test
    rec = wait_until(lambda: (lambda x: x if x and x.get("last_error") else None)(
        mc_show(we, "cram-1")), 20, "the job's first attempt")
    check("no AUTH mechanism Herald speaks (PLAIN, LOGIN)" in rec["last_error"], rec)
    check(s.messages() == [] and relay.count() == 0, "the job went out")
    check(s.auth_attempts() == [], "the worker tried a login: %r" % s.auth_attempts())
    check(w.stop() == 0, "worker exit")


@harness.timeout(60)
def test_server_without_auth_fails_at_auth_and_sends_nothing(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, implicit=True)  # no AUTH offered, MAIL accepted
    r, env = _setup(t, ca)
    _add(env, s.port, "ssl")
    for extra in ((), ("--send-to", "ops@example.test")):
        cp = _test(env, *extra)
        check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
        st = _steps(cp.stdout)
        check(st["connect"][0] == "ok" and st["tls"][0] == "ok" and st["ehlo"][0] == "ok", st)
        check(st["auth"][0] == "FAILED" and "did not offer AUTH" in st["auth"][1], st)
        check("FAILED at step 'auth'" in cp.stdout, cp.stdout)
        lines = [l.split(" ")[0] for l in cp.stdout.splitlines()]
        if "send" in lines:
            check(lines.index("auth") < lines.index("send"), cp.stdout)
    check(s.messages() == [], "a message went out without a login: %r" % s.messages())


@harness.timeout(60)
def test_untrusted_certificate_fails_at_tls(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD))
    r, env = _setup(t, None)  # the test CA is not trusted
    _add(env, s.port, "starttls")
    cp = _test(env)
    check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
    st = _steps(cp.stdout)
    check(st["connect"][0] == "ok" and st["ehlo"][0] == "ok", st)
    check(st["tls"][0] == "FAILED" and "certificate" in st["tls"][1], st.get("tls"))
    check("auth" not in st, st)
    check("FAILED at step 'tls'" in cp.stdout, cp.stdout)
    check(s.auth_attempts() == [], "no AUTH over an unverified connection")
    _no_password(cp, PASSWORD)


@harness.timeout(60)
def test_smtp_down_fails_at_connect(t):
    r, env = _setup(t, None)
    port = harness.free_port()  # nothing listens there
    _add(env, port, "starttls")
    cp = _test(env)
    check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
    st = _steps(cp.stdout)
    check(list(st) == ["connect"] and st["connect"][0] == "FAILED", st)
    check(str(port) in st["connect"][1] or "connect" in st["connect"][1].lower(), st)
    check("FAILED at step 'connect'" in cp.stdout, cp.stdout)


@harness.timeout(90)
def test_imap_wrong_login_fails_at_imap_login(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD))
    dv = Dovecot(t, crt, key, USER, "imap-only-other-pw-31")
    try:
        r, env = _setup(t, ca)
        _add(env, s.port, "starttls", dv.port)
        cp = _test(env)
        check(cp.returncode == 1, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
        st = _steps(cp.stdout)
        for n in ("connect", "ehlo", "tls", "auth", "imap connect", "imap tls"):
            check(st.get(n, ("?",))[0] == "ok", "step %s: %r" % (n, st.get(n)))
        check(st["imap login"][0] == "FAILED" and st["imap login"][1].startswith("NO"),
              st.get("imap login"))
        check("FAILED at step 'imap login'" in cp.stdout, cp.stdout)
        _no_password(cp, PASSWORD, "imap-only-other-pw-31")
        check(PASSWORD not in dv.log_text(), "password in dovecot's log")
    finally:
        dv.stop()


@harness.timeout(90)
def test_implicit_tls_smtps_and_imaps(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, implicit=True, auth="%s:%s" % (USER, PASSWORD))
    dv = Dovecot(t, crt, key, USER, PASSWORD)
    try:
        r, env = _setup(t, ca)
        _add(env, s.port, "ssl", dv.imaps_port)
        cp = _test(env, "--send-to", "ops@example.test")
        check(cp.returncode == 0, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
        st = _steps(cp.stdout)
        for n in ("connect", "tls", "ehlo", "auth", "send", "imap connect", "imap tls",
                  "imap login"):
            check(st.get(n, ("?",))[0] == "ok", "step %s: %r\n%s" % (n, st.get(n), cp.stdout))
        check(st["connect"][1].startswith("220"), st["connect"])  # the greeting, after TLS
        check("TLSv1" in st["tls"][1] and "STARTTLS" not in st["ehlo"][1], st)
        check(st["imap connect"][1].startswith("* OK"), st["imap connect"])
        order = [l.split(" ")[0] for l in cp.stdout.splitlines()
                 if l.split(" ")[0] in ("connect", "ehlo", "tls", "auth")]
        check(order == ["connect", "tls", "ehlo", "auth"], order)
        msgs = wait_until(lambda: s.messages(), 5, "the test message over SMTPS")
        check(msgs[0][0]["tls"] is True and msgs[0][0]["auth_user"] == USER, msgs[0][0])
        _no_password(cp, PASSWORD)
    finally:
        dv.stop()


@harness.timeout(90)
def test_passing_test_clears_auth_failed_failing_one_does_not(t):
    ca, crt, key = make_ca(t)
    r, env = _setup(t, ca)
    s = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD))
    _add(env, s.port, "starttls")
    _mark_failed(r, t)
    cp = run("heraldctl", "scheme", "list", "--json", env=env)
    check(json.loads(cp.stdout)[0]["state"] == "auth_failed", cp.stdout)

    # a failing test (the server is down now) leaves the mark
    s.proc.terminate()
    s.proc.wait(timeout=10)
    v0 = int(r.cmd("GET", t.prefix + ":schemes:version"))
    cp = _test(env)
    check(cp.returncode == 1 and "FAILED at step 'connect'" in cp.stdout, cp.stdout + cp.stderr)
    check("state auth_failed since" in cp.stdout and "535 5.7.8" in cp.stdout, cp.stdout)
    check(_stored(r, t)["state"] == "auth_failed", _stored(r, t))
    check(int(r.cmd("GET", t.prefix + ":schemes:version")) == v0, "nothing written")

    # a failing AUTH also leaves it
    s2 = TlsSmtp(t, crt, key, auth="%s:another-pw-9" % USER)
    cp = run("heraldctl", "scheme", "update", "--org", ORG, "--email", EMAIL, "--smtp-port",
             str(s2.port), env=env)
    check(cp.returncode == 0, cp.stderr)
    check(_stored(r, t)["state"] == "auth_failed", "a port change keeps the mark")
    cp = _test(env)
    check(cp.returncode == 1 and "FAILED at step 'auth'" in cp.stdout, cp.stdout + cp.stderr)
    check(_stored(r, t)["state"] == "auth_failed", _stored(r, t))

    # a passing test clears it, through the compare-and-set (version bumped)
    s3 = TlsSmtp(t, crt, key, auth="%s:%s" % (USER, PASSWORD))
    cp = run("heraldctl", "scheme", "update", "--org", ORG, "--email", EMAIL, "--smtp-port",
             str(s3.port), env=env)
    check(cp.returncode == 0, cp.stderr)
    before = _stored(r, t)
    v1 = int(r.cmd("GET", t.prefix + ":schemes:version"))
    cp = _test(env)
    check(cp.returncode == 0, "exit %d: %s %s" % (cp.returncode, cp.stdout, cp.stderr))
    check("auth_failed mark cleared" in cp.stdout, cp.stdout)
    after = _stored(r, t)
    check(after["state"] == "ok" and after["state_reason"] == "", after)
    check(after["state_at"] != before["state_at"], "state_at moves")
    for k in ("password", "updated_at", "created_at", "smtp_port", "username"):
        check(after[k] == before[k], "%s changed: %r -> %r" % (k, before[k], after[k]))
    check(int(r.cmd("GET", t.prefix + ":schemes:version")) == v1 + 1, "one CAS bump")
    cp = run("heraldctl", "scheme", "list", "--json", env=env)
    check(json.loads(cp.stdout)[0]["state"] == "ok", cp.stdout)
    # a second passing test has nothing to clear
    cp = _test(env)
    check(cp.returncode == 0 and "cleared" not in cp.stdout, cp.stdout)
    check(int(r.cmd("GET", t.prefix + ":schemes:version")) == v1 + 1, "no write")


def test_bad_usage_exits_2(t):
    r, env = _setup(t, None)
    _add(env, harness.free_port(), "starttls")
    cases = [
        (("--email", "nobody@acme.test"), "no such scheme: acme/nobody@acme.test"),
        (("--email", EMAIL, "--send-to", "not-an-address"), "--send-to"),
        (("--email", EMAIL, "--password", "x"), "--password"),
        (("--email", EMAIL, "extra"), "extra"),
        (("--email", "bad"), "--email"),
        ((), "--email"),
    ]
    for extra, want in cases:
        cp = run("heraldctl", "scheme", "test", "--org", ORG, *extra, env=env)
        check(cp.returncode == 2, "%r: exit %d: %s" % (extra, cp.returncode, cp.stderr))
        check(want in cp.stderr, "%r: %r not in %r" % (extra, want, cp.stderr))
        check("connect" not in cp.stdout, "%r: nothing contacted: %r" % (extra, cp.stdout))
    cp = run("heraldctl", "scheme", "test", "--email", EMAIL, env=env)
    check(cp.returncode == 2 and "--org" in cp.stderr, cp.stderr)
    # a missing key file, and a key that does not open the password
    for key_env, want in ((t.path("no-such-key"), "HERALD_SECRET_KEY_FILE"),
                          (None, "HERALD_SECRET_KEY_FILE")):
        e2 = dict(env, HERALD_SECRET_KEY_FILE=key_env) if key_env else \
            {k: v for k, v in env.items() if k != "HERALD_SECRET_KEY_FILE"}
        cp = run("heraldctl", "scheme", "test", "--org", ORG, "--email", EMAIL, env=e2)
        check(cp.returncode == 2 and want in cp.stderr, "%s: %d %s" % (key_env, cp.returncode,
                                                                     cp.stderr))
    other = t.path("other.key")
    with open(other, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(other, 0o600)
    cp = run("heraldctl", "scheme", "test", "--org", ORG, "--email", EMAIL,
             env=dict(env, HERALD_SECRET_KEY_FILE=other))
    check(cp.returncode == 2 and "does not open" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "scheme", "test", "--help", env=env)
    check(cp.returncode == 0 and "--send-to" in cp.stdout, cp.stdout)
