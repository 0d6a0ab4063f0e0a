#!/usr/bin/python3
"""An SMTP server with TLS and AUTH for Herald's integration tests (aiosmtpd).

    /usr/bin/python3 tests/integration/tls_smtpd.py --port P --dir D \
        --cert C --key K [--implicit | --plain] [--auth USER:PASSWORD]
        [--after-starttls TEXT]

STARTTLS is offered (and required before MAIL) unless --implicit, which
makes it an SMTPS server (TLS from the first byte). With --auth, AUTH PLAIN
and LOGIN are offered after TLS and required before MAIL; a wrong password
gets 535 5.7.8. Every accepted message is saved as D/<n>.eml with
D/<n>.json {"mail_from", "rcpt_tos", "tls", "auth_user", "helo"} (helo:
the session's EHLO or HELO name); every AUTH
attempt is appended to D/auth.jsonl.

--cram-md5-only (with --auth) offers AUTH CRAM-MD5 alone (RFC 2195), not
PLAIN or LOGIN: a server Herald cannot log in to.

--plain offers neither STARTTLS nor TLS, and AUTH without TLS (a server on
loopback, as `scheme add --tls none` allows). --after-starttls TEXT writes
TEXT (Python escapes such as \\r\\n are decoded) in clear text right after
the "220" to STARTTLS, before the handshake: bytes a client must discard
(RFC 3207 §4.2).
"""
import argparse
import asyncio
import hmac
import json
import os
import signal
import time
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Smtp(SMTP):
    after_starttls = None

    async def push(self, status):
        await super().push(status)
        if self.after_starttls and status.startswith("220 Ready to start TLS"):
            self.transport.write(self.after_starttls)


class Keep:
    def __init__(self, d):
        self.dir = d
        self.n = 0
        self.delay = 0.0  # --delay-data
        self.cram = None  # (user, password) when CRAM-MD5 is offered

    async def auth_CRAM__MD5(self, server, args):
        """RFC 2195: a challenge, then "user hex(HMAC-MD5(password, it))"."""
        if self.cram is None:
            return AuthResult(success=False, handled=False)
        challenge = ("<%d.%d@smtp.test>" % (os.getpid(), time.time_ns())).encode()
        answer = await server.challenge_auth(challenge)
        ok = False
        if isinstance(answer, bytes):
            try:
                login, digest = answer.decode().rsplit(" ", 1)  # already decoded
                want = hmac.new(self.cram[1].encode(), challenge, "md5").hexdigest()
                ok = login == self.cram[0] and hmac.compare_digest(digest, want)
            except (ValueError, UnicodeDecodeError):
                ok = False
        with open(os.path.join(self.dir, "auth.jsonl"), "a") as f:
            f.write(json.dumps({"mechanism": "CRAM-MD5", "ok": ok}) + "\n")
        return AuthResult(success=ok, handled=False,
                          auth_data=LoginPassword(self.cram[0].encode(), b"") if ok else None)

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.n += 1
        with open(os.path.join(self.dir, "%d.eml" % self.n), "wb") as f:
            f.write(envelope.original_content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "auth_user": (session.auth_data.login.decode()
                              if isinstance(session.auth_data, LoginPassword) else None),
                "helo": session.host_name, "at": time.time()}
        tmp = os.path.join(self.dir, ".%d.json" % self.n)
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(self.dir, "%d.json" % self.n))
        return "250 2.0.0 Ok: queued as T%d" % self.n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--implicit", action="store_true")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--auth")
    ap.add_argument("--after-starttls")
    ap.add_argument("--cram-md5-only", action="store_true")
    ap.add_argument("--delay-data", type=float, default=0.0,
                    help="seconds before answering each message's end")
    a = ap.parse_args()
    if a.after_starttls:
        Smtp.after_starttls = a.after_starttls.encode().decode("unicode_escape").encode("latin-1")
    os.makedirs(a.dir, exist_ok=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    handler = Keep(a.dir)
    handler.delay = a.delay_data
    user, pw = (a.auth.split(":", 1) if a.auth else (None, None))
    if a.cram_md5_only and user:
        handler.cram = (user, pw)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == user and auth_data.password.decode() == pw
        with open(os.path.join(a.dir, "auth.jsonl"), "a") as f:
            f.write(json.dumps({"mechanism": mechanism, "ok": ok}) + "\n")
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def factory():
        kw = dict(hostname="smtp.test", decode_data=False,
                  authenticator=authenticator if user else None,
                  auth_required=bool(user),
                  # aiosmtpd counts only STARTTLS as TLS: an SMTPS session
                  # is TLS from the first byte. Without --auth, keep it on:
                  # then an SMTPS server offers no AUTH at all.
                  auth_require_tls=not ((a.implicit or a.plain) and user),
                  auth_exclude_mechanism=(["PLAIN", "LOGIN"] if a.cram_md5_only
                                          else ["CRAM-MD5"]))
        if not a.implicit and not a.plain:
            kw.update(tls_context=ctx, require_starttls=True)
        return Smtp(handler, **kw)

    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(
        factory, "127.0.0.1", a.port, ssl=ctx if a.implicit else None))
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    srv.close()


if __name__ == "__main__":
    main()
