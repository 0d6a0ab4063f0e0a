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
Accepted messages are saved as D/<n>.eml; D/events.jsonl records each
connection's commands.
"""
import argparse
import json
import os
import socket
import threading


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    state = {"n": 0, "lock": threading.Lock()}
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, a, state), daemon=True).start()


if __name__ == "__main__":
    main()
