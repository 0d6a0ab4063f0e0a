#!/usr/bin/python3
"""A deliberately misbehaving SMTP server for Herald's tests: one mode per
way a server reply can be wrong. Plain sockets, one thread per client.

    /usr/bin/python3 tests/integration/evil_smtpd.py --port P --dir D --mode M

Modes:
  garbage        greets with bytes that are not an SMTP reply
  longline       a 10,000-byte greeting line
  greet421       "421 too busy" at connect, then closes
  greet554       "554 no service here" at connect
  drop-in-data   accepts up to DATA, reads part of the body, closes
  no-ehlo        answers EHLO with 502; HELO works; no PIPELINING
  lockstep       EHLO without PIPELINING: the client must go one command
                 at a time
  silent-after-data  never answers the end of data (a stalled server)

Modes that misbehave for a while, then serve normally (for the fault
suite, tests/fault/). Each misbehaves while "active": for the first
--times K occurrences (connections for connect421, messages otherwise)
and/or until the file --until-file PATH exists; with neither option,
always.
  connect421     "421 4.3.2 too busy" at connect, then closes
  data451        "451 4.3.0" at the end of DATA
  drop-mid-data  reads the header block and part of the body, then closes
                 the connection
  stall-data     never answers the end of DATA (until the client leaves)
  auth535        offers AUTH PLAIN LOGIN and requires it before MAIL (530);
                 while active every AUTH gets "535 5.7.8"; after that the
                 credentials must be --user / --password (else 535)
  size552        a message over --max-size bytes gets "552 5.3.4" (always:
                 size is not a phase): with --size-at mail (the default)
                 EHLO offers "SIZE --max-size" and a MAIL FROM whose SIZE=
                 exceeds it is refused (and a body over it at the end of
                 DATA); with --size-at data no SIZE is offered and the 552
                 comes at the end of DATA
Accepted messages are saved as D/<n>.eml; D/events.jsonl records each
connection's commands. The modes above also record one event per
misbehaviour (refused_connect, tempfail_data, dropped_mid_data,
stalled, auth_refused, rejected_size) and per accepted message
("accepted" with "n" and "herald_id"), each with "at" (epoch seconds).
"""
import argparse
import base64
import json
import os
import re
import socket
import threading
import time

PHASED = ("connect421", "data451", "drop-mid-data", "stall-data", "auth535", "size552")
HERALD_ID_RE = re.compile(rb"^X-Herald-Id:[ \t]*([^\r\n]*)", re.M | re.I)
SIZE_RE = re.compile(r"\bSIZE=(\d+)", re.I)


def active(a, state):
    """Does this phased server misbehave now? Consumes one of --times."""
    if a.until_file and os.path.exists(a.until_file):
        return False
    if a.times is not None:
        with state["lock"]:
            if state["bad"] >= a.times:
                return False
            state["bad"] += 1
    return True


def herald_id(body):
    m = HERALD_ID_RE.search(body.split(b"\r\n\r\n", 1)[0])
    return m.group(1).strip().decode("utf-8", "replace") if m else None


def auth_check(a, cmd, f, send):
    """One AUTH exchange (PLAIN, inline or not, or LOGIN): True when the
    server accepts it. Replies itself."""
    parts = cmd.split()
    mech = parts[1].upper() if len(parts) > 1 else ""

    def b64line():
        line = f.readline()
        if not line:
            raise OSError("client went away during AUTH")
        try:
            return base64.b64decode(line.strip(), validate=True)
        except ValueError:
            return b""

    if mech == "PLAIN":
        if len(parts) > 2:
            try:
                raw = base64.b64decode(parts[2], validate=True)
            except ValueError:
                raw = b""
        else:
            send("334 ")
            raw = b64line()
        fields = raw.split(b"\0")
        user, pw = (fields[1], fields[2]) if len(fields) == 3 else (None, None)
    elif mech == "LOGIN":
        send("334 VXNlcm5hbWU6")
        user = b64line()
        send("334 UGFzc3dvcmQ6")
        pw = b64line()
    else:
        send("504 5.5.4 unrecognised authentication mechanism")
        return None
    if user is not None and user.decode("utf-8", "replace") == a.user and \
            pw.decode("utf-8", "replace") == a.password:
        return True
    return False


def serve(conn, a, state):
    f = conn.makefile("rb")
    cmds = []

    def send(s):
        conn.sendall(s.encode() + b"\r\n")

    def log(ev):
        with state["lock"]:
            with open(os.path.join(a.dir, "events.jsonl"), "a") as fh:
                fh.write(json.dumps(ev) + "\n")

    try:
        if a.mode in PHASED:
            serve_phased(conn, f, a, state, cmds, send, log)
            return
        if a.mode == "garbage":
            conn.sendall(b"HELLO THERE\r\n")
        elif a.mode == "longline":
            conn.sendall(b"220 " + b"x" * 10000 + b"\r\n")
        elif a.mode == "greet421":
            send("421 4.3.2 too busy, try later")
            return
        elif a.mode == "greet554":
            send("554 5.3.2 no service here")
        else:
            send("220 evil.test ESMTP")
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            cmds.append(cmd)
            up = cmd.upper()
            if up.startswith("EHLO"):
                if a.mode == "no-ehlo":
                    send("502 5.5.1 EHLO not implemented")
                else:
                    send("250-evil.test")
                    send("250 8BITMIME")
            elif up.startswith("HELO"):
                send("250 evil.test")
            elif up.startswith("MAIL") or up.startswith("RCPT") or up.startswith("RSET"):
                send("250 2.0.0 OK")
            elif up == "DATA":
                send("354 go ahead")
                body = b""
                while True:
                    l = f.readline()
                    if not l:
                        return
                    if a.mode == "drop-in-data" and len(body) > 100:
                        log({"event": "dropped"})
                        return
                    if l == b".\r\n":
                        break
                    body += l
                if a.mode == "silent-after-data":
                    log({"event": "silent"})
                    f.readline()  # wait until the client goes away
                    return
                with state["lock"]:
                    state["n"] += 1
                    n = state["n"]
                with open(os.path.join(a.dir, "%d.eml" % n), "wb") as fh:
                    fh.write(body)
                send("250 2.0.0 queued as E%d" % n)
            elif up == "QUIT":
                send("221 bye")
                return
            else:
                send("500 5.5.2 what?")
    except OSError:
        pass
    finally:
        log({"event": "closed", "commands": cmds})
        conn.close()


def serve_phased(conn, f, a, state, cmds, send, log):
    peer = list(conn.getpeername()[:2])
    if a.mode == "connect421" and active(a, state):
        log({"event": "refused_connect", "peer": peer, "at": time.time()})
        send("421 4.3.2 too busy, try later")
        return
    send("220 evil.test ESMTP")
    authed = False
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode("latin-1").rstrip("\r\n")
        cmds.append(cmd if not cmd.upper().startswith("AUTH") else "AUTH ...")
        up = cmd.upper()
        if up.startswith("EHLO"):
            send("250-evil.test")
            if a.mode == "auth535":
                send("250-AUTH PLAIN LOGIN")
            if a.mode == "size552" and a.size_at == "mail":
                send("250-SIZE %d" % a.max_size)
            send("250 8BITMIME")
        elif up.startswith("HELO"):
            send("250 evil.test")
        elif up.startswith("AUTH") and a.mode == "auth535":
            if authed:
                send("503 5.5.1 already authenticated")
            elif active(a, state):
                if cmd.split()[1:2] and cmd.split()[1].upper() == "PLAIN" and len(cmd.split()) == 2:
                    send("334 ")
                    f.readline()
                elif cmd.split()[1:2] and cmd.split()[1].upper() == "LOGIN":
                    send("334 VXNlcm5hbWU6")
                    f.readline()
                    send("334 UGFzc3dvcmQ6")
                    f.readline()
                log({"event": "auth_refused", "peer": peer, "at": time.time()})
                send("535 5.7.8 Authentication credentials invalid")
            else:
                ok = auth_check(a, cmd, f, send)
                if ok:
                    authed = True
                    log({"event": "auth_ok", "peer": peer, "at": time.time()})
                    send("235 2.7.0 Authentication successful")
                elif ok is False:
                    log({"event": "auth_refused", "peer": peer, "wrong": True,
                         "at": time.time()})
                    send("535 5.7.8 Authentication credentials invalid")
        elif up.startswith("MAIL"):
            m = SIZE_RE.search(cmd)
            if a.mode == "auth535" and not authed:
                send("530 5.7.0 Authentication required")
            elif a.mode == "size552" and m and int(m.group(1)) > a.max_size:
                log({"event": "rejected_size", "at_command": "MAIL", "size": int(m.group(1)),
                     "peer": peer, "at": time.time()})
                send("552 5.3.4 message size exceeds fixed limit")
            else:
                send("250 2.0.0 OK")
        elif up.startswith("RCPT") or up.startswith("RSET") or up.startswith("NOOP"):
            send("250 2.0.0 OK")
        elif up == "DATA":
            send("354 go ahead")
            drop = a.mode == "drop-mid-data" and active(a, state)
            body = b""
            while True:
                l = f.readline()
                if not l:
                    return
                if drop and len(body) > 100 and b"\r\n\r\n" in body:
                    log({"event": "dropped_mid_data", "herald_id": herald_id(body),
                         "peer": peer, "at": time.time()})
                    return
                if l == b".\r\n":
                    break
                body += l
            hid = herald_id(body)
            if a.mode == "data451" and active(a, state):
                log({"event": "tempfail_data", "herald_id": hid, "peer": peer,
                     "at": time.time()})
                send("451 4.3.0 Temporary failure, try again later")
                continue
            if a.mode == "stall-data" and active(a, state):
                log({"event": "stalled", "herald_id": hid, "peer": peer, "at": time.time()})
                while f.readline():  # wait until the client goes away
                    pass
                return
            if a.mode == "size552" and len(body) > a.max_size:
                log({"event": "rejected_size", "at_command": "DATA", "size": len(body),
                     "herald_id": hid, "peer": peer, "at": time.time()})
                send("552 5.3.4 message size exceeds fixed limit")
                continue
            with state["lock"]:
                state["n"] += 1
                n = state["n"]
            with open(os.path.join(a.dir, "%d.eml" % n), "wb") as fh:
                fh.write(body)
            log({"event": "accepted", "n": n, "herald_id": hid, "peer": peer,
                 "at": time.time()})
            send("250 2.0.0 queued as E%d" % n)
        elif up == "QUIT":
            send("221 bye")
            return
        else:
            send("500 5.5.2 what?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--times", type=int, help="phased modes: misbehave this many times")
    ap.add_argument("--until-file", help="phased modes: misbehave until this file exists")
    ap.add_argument("--max-size", type=int, default=10000, help="size552: the limit (bytes)")
    ap.add_argument("--size-at", choices=("mail", "data"), default="mail",
                    help="size552: refuse at MAIL FROM (SIZE offered) or at the end of DATA")
    ap.add_argument("--user", default="relayuser", help="auth535: the accepted user")
    ap.add_argument("--password", default="relaypass", help="auth535: the accepted password")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    state = {"n": 0, "bad": 0, "lock": threading.Lock()}
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, a, state), daemon=True).start()


if __name__ == "__main__":
    main()
