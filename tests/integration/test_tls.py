"""The relay over TLS: STARTTLS when offered, implicit TLS, certificates
verified (a test CA through HERALD_CA_FILE), host names checked, AUTH, and
what happens when any of it is wrong. Real servers: aiosmtpd with TLS
(tests/integration/tls_smtpd.py), real redis-server, the real worker."""
import json
import os
import subprocess
import sys
import time

import harness
from harness import check, wait_until, mc_show

HERE = os.path.dirname(os.path.abspath(__file__))


def make_ca(t, cn_ip="127.0.0.1", dns=None):
    """A CA and a server certificate signed by it, made with openssl."""
    d = t.path("pki")
    os.makedirs(d, exist_ok=True)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = (os.path.join(d, n) for n in ("srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(d, "ext.cnf")
    san = "DNS:%s" % dns if dns else "IP:%s" % cn_ip
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" % san)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "2", "-subj", "/CN=Herald Test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=smtp.test")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


class TlsSmtp:
    def __init__(self, t, cert, key, implicit=False, auth=None, plain=False,
                 after_starttls=None, cram_md5_only=False, delay_data=0):
        self.port = harness.free_port()
        self.dir = t.path("tls-smtp-%d" % self.port)
        args = [sys.executable if sys.executable.startswith("/usr/bin") else "/usr/bin/python3",
                os.path.join(HERE, "tls_smtpd.py"), "--port", str(self.port),
                "--dir", self.dir, "--cert", cert, "--key", key]
        if implicit:
            args.append("--implicit")
        if auth:
            args += ["--auth", auth]
        if plain:
            args.append("--plain")
        if after_starttls:
            args += ["--after-starttls", after_starttls]
        if cram_md5_only:
            args.append("--cram-md5-only")
        if delay_data:
            args += ["--delay-data", str(delay_data)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(t.path("tls-smtpd.log"), "a"))
        t.register(self.proc)
        harness.wait_until(lambda: _port_open(self.port), 10, "TLS SMTP server up")

    def messages(self):
        out = []
        if not os.path.isdir(self.dir):
            return out
        for f in sorted(os.listdir(self.dir)):
            if f.endswith(".json") and not f.startswith("."):
                with open(os.path.join(self.dir, f)) as fh:
                    meta = json.load(fh)
                with open(os.path.join(self.dir, f[:-5] + ".eml"), "rb") as fh:
                    out.append((meta, fh.read()))
        return out

    def auth_attempts(self):
        p = os.path.join(self.dir, "auth.jsonl")
        if not os.path.exists(p):
            return []
        with open(p) as f:
            return [json.loads(l) for l in f if l.strip()]


def _port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def job(id):
    return json.dumps({"id": id, "type": "receipt", "org": "acme", "account": "a1",
                       "from": "billing@acme.test", "from_name": "Acme",
                       "to": ["alice@example.test"], "subject": "Receipt",
                       "text": "Thanks.\n"})


def start(t, smtp_url, **env):
    r = t.redis()
    e = t.env(r, None, HERALD_RELAY=smtp_url, **env)
    w = t.worker(e)
    return r, e, w


def test_starttls_verified_with_test_ca(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key)
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("tls-1"))
    wait_until(lambda: len(s.messages()) == 1, 15, "delivery over STARTTLS")
    meta, raw = s.messages()[0]
    check(meta["tls"] is True, "the message did not travel over TLS")
    check(b"X-Herald-Id: tls-1" in raw, "X-Herald-Id missing")
    wait_until(lambda: (mc_show(e, "tls-1") or {}).get("status") == "sent", 10, "record sent")
    check(w.stop() == 0, "worker exit code")


def test_untrusted_certificate_is_refused_and_retried(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key)
    # no HERALD_CA_FILE: the test CA is not trusted
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("tls-bad"))
    wait_until(lambda: (mc_show(e, "tls-bad") or {}).get("status") == "deferred", 15,
               "deferred after a failed verification")
    rec = mc_show(e, "tls-bad")
    check("certificate verify failed" in (rec["last_error"] or ""),
          "last_error should name the verification: %r" % rec["last_error"])
    check(s.messages() == [], "a message went out over an unverified connection")
    check(w.alive(), "worker died")
    check(w.stop() == 0, "worker exit code")


def test_host_name_mismatch_is_refused(t):
    # certificate for "mail.example.test", server reached as 127.0.0.1
    ca, crt, key = make_ca(t, dns="mail.example.test")
    s = TlsSmtp(t, crt, key)
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("tls-name"))
    wait_until(lambda: (mc_show(e, "tls-name") or {}).get("status") == "deferred", 15,
               "deferred after a host name mismatch")
    check(s.messages() == [], "delivered despite a name mismatch")
    check(w.stop() == 0, "worker exit code")


def test_implicit_tls_smtps(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, implicit=True)
    r, e, w = start(t, "smtps://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca)
    for i in range(5):
        r.cmd("LPUSH", t.prefix + ":queue:normal", job("smtps-%d" % i))
    wait_until(lambda: len(s.messages()) == 5, 15, "5 deliveries over implicit TLS")
    check(all(m["tls"] for m, _ in s.messages()), "not all over TLS")
    check(w.stop() == 0, "worker exit code")


def test_relay_auth_over_starttls(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="relayuser:s3cret-pw")
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca,
                    HERALD_RELAY_USER="relayuser", HERALD_RELAY_PASSWORD="s3cret-pw")
    for i in range(3):
        r.cmd("LPUSH", t.prefix + ":queue:normal", job("auth-%d" % i))
    wait_until(lambda: len(s.messages()) == 3, 15, "3 authenticated deliveries")
    check(all(m["auth_user"] == "relayuser" for m, _ in s.messages()), "not authenticated")
    # connections are reused: fewer logins than messages is fine, more is not
    check(1 <= len(s.auth_attempts()) <= 3, "auth attempts: %r" % s.auth_attempts())
    check(w.stop() == 0, "worker exit code")
    logs = open(w.log_path, encoding="utf-8", errors="replace").read() \
        if hasattr(w, "log_path") else json.dumps(w.logs())
    check("s3cret-pw" not in logs, "the relay password appeared in the log")


def test_relay_wrong_password_defers_not_fails(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="relayuser:right")
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca,
                    HERALD_RELAY_USER="relayuser", HERALD_RELAY_PASSWORD="wrong")
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("auth-bad"))
    wait_until(lambda: (mc_show(e, "auth-bad") or {}).get("status") == "deferred", 15,
               "deferred after 535")
    rec = mc_show(e, "auth-bad")
    check("535" in (rec["last_error"] or ""), "last_error: %r" % rec["last_error"])
    check(s.messages() == [], "delivered without authentication")
    check(r.cmd("LLEN", t.prefix + ":dead") == 0, "a relay credential problem dead-lettered the job")
    check(w.stop() == 0, "worker exit code")


def test_clear_text_after_starttls_is_discarded(t):
    # RFC 3207 §4.2: whatever the server sends after its 220 to STARTTLS and
    # before the handshake is not part of the TLS session. A server (or a
    # man in the middle) sending "220 go ahead\r\n250 X" once made Herald
    # misread every later reply on that connection.
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, after_starttls="250 X")
    r, e, w = start(t, "smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca)
    for i in range(3):
        r.cmd("LPUSH", t.prefix + ":queue:normal", job("inj-%d" % i))
    wait_until(lambda: len(s.messages()) == 3, 15, "3 deliveries over STARTTLS")
    for i in range(3):
        wait_until(lambda: (mc_show(e, "inj-%d" % i) or {}).get("status") == "sent", 10,
                   "record inj-%d sent" % i)
    check(all(m["tls"] for m, _ in s.messages()), "not over TLS")
    check(w.stop() == 0, "worker exit code")


def test_v4_mapped_loopback_is_loopback_for_the_mailer(t):
    # `scheme add --tls none` accepts ::ffff:127.0.0.1 as loopback; the
    # mailer must agree and send the scheme's credentials there (it once
    # refused, and the job retried until it expired).
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, plain=True, auth="orguser:pw")
    r = t.redis()
    kf = t.path("herald.key")
    with open(kf, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(kf, 0o600)
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=kf)
    cp = harness.run("heraldctl", "scheme", "add", "--org", "acme", "--email",
                     "billing@acme.test", "--smtp-host", "::ffff:127.0.0.1", "--smtp-port",
                     s.port, "--username", "orguser", "--password-stdin", "--tls", "none",
                     env=e, input="pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    w = t.worker(e)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("mapped-1"))
    wait_until(lambda: len(s.messages()) == 1, 15, "delivery through ::ffff:127.0.0.1")
    meta, _ = s.messages()[0]
    check(meta["auth_user"] == "orguser", meta)
    wait_until(lambda: (mc_show(e, "mapped-1") or {}).get("status") == "sent", 10, "record sent")
    check(w.stop() == 0, "worker exit code")
