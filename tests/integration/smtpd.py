#!/usr/bin/python3
"""A recording SMTP server for Herald's integration tests (aiosmtpd).

    /usr/bin/python3 tests/integration/smtpd.py --port P --dir D [options]

Every accepted message is saved as D/<n>.eml (the DATA bytes, dot-unstuffed)
and D/<n>.json (written last, atomically) holding the envelope:
{"n", "mail_from", "rcpt_tos", "peer": [host, port], "mail_options",
"rcpt_options", "at"}. n counts from 1. Every event (connect, accepted,
rcpt_rejected, data_rejected, data_tempfail, data_delayed) is appended to
D/events.jsonl as one JSON object per line; DATA events carry the
message's "message_id" and "herald_id" (X-Herald-Id) header values. Each
session's EHLO or HELO name is an "ehlo" event ({"name", "verb"}) and its
QUIT a "quit" event, both with the client's "peer".

Options:
  --reject-rcpt REGEX    550 5.1.1 for every RCPT whose address matches
  --reject-data REGEX    554 5.6.0 at the end of DATA if the message matches
  --tempfail-data REGEX  451 4.3.0 at the end of DATA if the message matches
  --tempfail-times N     only the first N matching messages get the 451
  --tempfail-skip K      ... after the first K matching messages, which pass
  --tempfail-reply TEXT  the reply for those instead ("CODE TEXT", e.g. a
                         provider's throttle: "451 4.7.1 Rate limited, try
                         again in 3 seconds")
  --tempfail-mail N      451 4.3.0 to the first N MAIL commands (with
                         --pipelining the RCPTs and DATA of those
                         transactions then get aiosmtpd's 503s)
  --tempfail-rcpt REGEX  450 4.2.0 for every RCPT whose address matches
                         (while --tempfail-times lasts, shared with DATA)
  --delay-data SECONDS   stall this long before answering the end of DATA
  --delay-times N        only the first N messages are stalled
  --max-rcpt N           a transaction takes N recipients; each RCPT after
                         them gets "452 4.5.3 Error: too many recipients"
                         (Postfix's smtpd_recipient_limit)
  --pipelining           EHLO offers PIPELINING (aiosmtpd reads pipelined
                         commands in order either way)
  --host HOST            listen address (default 127.0.0.1)

Regexes are searched (Python re, MULTILINE) in the address, or in the raw
message decoded as Latin-1. SIGTERM or SIGINT stops the server. No TLS, no
AUTH.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


HEADER_RE = re.compile(rb"^(Message-ID|X-Herald-Id):[ \t]*([^\r\n]*)", re.M | re.I)


def header_ids(raw):
    """{"message_id", "herald_id"} from the header block (None when absent)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    out = {"message_id": None, "herald_id": None}
    for m in HEADER_RE.finditer(head):
        key = "message_id" if m.group(1).lower() == b"message-id" else "herald_id"
        if out[key] is None:
            out[key] = m.group(2).strip().decode("utf-8", "replace")
    return out


class Recorder:
    def __init__(self, args):
        self.dir = os.path.abspath(args.dir)
        os.makedirs(self.dir, exist_ok=True)
        self.reject_rcpt = re.compile(args.reject_rcpt, re.M) if args.reject_rcpt else None
        self.reject_data = re.compile(args.reject_data, re.M) if args.reject_data else None
        self.tempfail_data = re.compile(args.tempfail_data, re.M) if args.tempfail_data else None
        self.tempfail_left = args.tempfail_times
        self.tempfail_reply = args.tempfail_reply or "451 4.3.0 Temporary failure, try again later"
        self.tempfail_rcpt = re.compile(args.tempfail_rcpt) if args.tempfail_rcpt else None
        self.tempfail_skip = args.tempfail_skip or 0
        self.tempfail_mail = args.tempfail_mail or 0
        self.max_rcpt = args.max_rcpt
        self.pipelining = args.pipelining
        self.delay = args.delay_data
        self.delay_left = args.delay_times
        # continue numbering after what a previous server left in the dir
        existing = [int(f[:-5]) for f in os.listdir(self.dir)
                    if f.endswith(".json") and f[:-5].isdigit()]
        self.n = max(existing, default=0)
        self.events = open(os.path.join(self.dir, "events.jsonl"), "a", buffering=1,
                           encoding="utf-8")

    def event(self, kind, **fields):
        fields["event"] = kind
        fields["at"] = time.time()
        self.events.write(json.dumps(fields) + "\n")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.event("ehlo", verb="EHLO", name=hostname, peer=list(session.peer[:2]))
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        self.event("ehlo", verb="HELO", name=hostname, peer=list(session.peer[:2]))
        return f"250 {server.hostname}"

    async def handle_QUIT(self, server, session, envelope):
        self.event("quit", peer=list(session.peer[:2]))
        return "221 2.0.0 Bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.tempfail_mail > 0:
            self.tempfail_mail -= 1
            self.event("mail_tempfail", sender=address, peer=list(session.peer[:2]))
            return "451 4.3.0 <%s>: sender busy, try again later" % address
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.max_rcpt is not None and len(envelope.rcpt_tos) >= self.max_rcpt:
            self.event("rcpt_too_many", rcpt=address, peer=list(session.peer[:2]))
            return "452 4.5.3 Error: too many recipients"
        if self.reject_rcpt and self.reject_rcpt.search(address):
            self.event("rcpt_rejected", rcpt=address, peer=list(session.peer[:2]))
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.tempfail_rcpt and self.tempfail_rcpt.search(address) and (
                self.tempfail_left is None or self.tempfail_left > 0):
            if self.tempfail_left is not None:
                self.tempfail_left -= 1
            self.event("rcpt_tempfail", rcpt=address, peer=list(session.peer[:2]))
            return f"450 4.2.0 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = list(session.peer[:2])
        ids = header_ids(raw)
        if self.delay > 0 and (self.delay_left is None or self.delay_left > 0):
            if self.delay_left is not None:
                self.delay_left -= 1
            self.event("data_delayed", seconds=self.delay, peer=peer, **ids)
            # A client that gives up closes the connection; aiosmtpd then
            # cancels this coroutine and the message is not recorded.
            await asyncio.sleep(self.delay)
            if server.transport is None or server.transport.is_closing():
                self.event("data_abandoned", peer=peer, **ids)
                return "421 4.4.2 client went away"
        text = None
        if self.reject_data or self.tempfail_data:
            text = raw.decode("latin-1")
        if self.reject_data and self.reject_data.search(text):
            self.event("data_rejected", mail_from=envelope.mail_from,
                       rcpt_tos=list(envelope.rcpt_tos), peer=peer, **ids)
            return "554 5.6.0 Message rejected by test policy"
        if self.tempfail_data and self.tempfail_data.search(text) and self.tempfail_skip > 0:
            self.tempfail_skip -= 1
        elif self.tempfail_data and self.tempfail_data.search(text):
            if self.tempfail_left is None or self.tempfail_left > 0:
                if self.tempfail_left is not None:
                    self.tempfail_left -= 1
                self.event("data_tempfail", mail_from=envelope.mail_from,
                           rcpt_tos=list(envelope.rcpt_tos), peer=peer, **ids)
                return self.tempfail_reply
        self.n += 1
        n = self.n
        meta = {
            "n": n,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": peer,
            "mail_options": list(envelope.mail_options),
            "rcpt_options": [list(o) for o in envelope.rcpt_options],
            "at": time.time(),
        }
        with open(os.path.join(self.dir, f"{n}.eml"), "wb") as f:
            f.write(raw)
        tmp = os.path.join(self.dir, f".{n}.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(self.dir, f"{n}.json"))
        # bytes the client sent after the message's end before its reply:
        # a next transaction's commands chained after it (RFC 2920 §3.1)
        reader = getattr(server, "_reader", None)
        ahead = len(getattr(reader, "_buffer", b"") or b"")
        self.event("accepted", n=n, peer=peer, ahead=ahead, **ids)
        return f"250 2.0.0 Ok: queued as T{n}"


class Server(SMTP):
    def __init__(self, recorder, **kw):
        super().__init__(recorder, **kw)
        self.recorder = recorder

    def connection_made(self, transport):
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.recorder.event("connect", peer=list(peer[:2]) if peer else None)


def main():
    ap = argparse.ArgumentParser(description="recording SMTP server for tests")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--reject-rcpt")
    ap.add_argument("--reject-data")
    ap.add_argument("--tempfail-data")
    ap.add_argument("--tempfail-times", type=int)
    ap.add_argument("--tempfail-reply")
    ap.add_argument("--tempfail-rcpt")
    ap.add_argument("--tempfail-mail", type=int)
    ap.add_argument("--delay-data", type=float, default=0.0)
    ap.add_argument("--delay-times", type=int)
    ap.add_argument("--tempfail-skip", type=int)
    ap.add_argument("--max-rcpt", type=int)
    ap.add_argument("--pipelining", action="store_true")
    args = ap.parse_args()

    recorder = Recorder(args)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return Server(
            recorder,
            data_size_limit=64 * 1024 * 1024,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname="smtp.test",
            ident=f"Herald test smtpd pid {os.getpid()}",
            timeout=120,
            loop=loop,
        )

    server = loop.run_until_complete(
        loop.create_server(factory, host=args.host, port=args.port, reuse_address=True,
                           backlog=512)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtpd: listening on {args.host}:{args.port}, dir {recorder.dir}", file=sys.stderr,
          flush=True)
    loop.run_until_complete(stop.wait())
    server.close()
    loop.run_until_complete(server.wait_closed())
    recorder.events.close()
    print("smtpd: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
