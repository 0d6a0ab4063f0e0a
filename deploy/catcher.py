#!/usr/bin/python3
"""A development SMTP catcher: accepts every message on loopback and keeps
it as DIR/<n>.eml. Not for production: no TLS, no AUTH, no relaying.

    /usr/bin/python3 deploy/catcher.py --port 25 --dir var/demo/mail
"""
import argparse
import asyncio
import os
import signal

from aiosmtpd.controller import Controller


class Keep:
    def __init__(self, path):
        self.path = path
        self.n = len([f for f in os.listdir(path) if f.endswith(".eml")])

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        name = os.path.join(self.path, "%d.eml" % self.n)
        with open(name + ".tmp", "wb") as f:
            f.write(b"X-Envelope-From: <%s>\r\n" % envelope.mail_from.encode())
            for r in envelope.rcpt_tos:
                f.write(b"X-Envelope-To: <%s>\r\n" % r.encode())
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 2.0.0 Ok: kept as %d.eml" % self.n


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1025)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    c = Controller(Keep(a.dir), hostname=a.host, port=a.port, decode_data=False)
    c.start()
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    c.stop()


if __name__ == "__main__":
    main()
