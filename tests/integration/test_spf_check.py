"""`heraldctl spf check` against a real DNS server (SPEC §4 path 2, §7;
issue 3): dnsmasq on a free loopback port serves the SPF cases, and
HERALD_DNS points the resolver (io/dnsres.c) at it.

dnsmasq runs with --no-resolv --no-hosts and `local=/test/`, so it answers
only from its configuration: a name under .test that it does not know is
NXDOMAIN, a known name without records of the asked type is NODATA. The
platform's sender domain is sender.test (HERALD_SENDER_DOMAIN)."""

import json
import os
import random
import signal
import socket
import struct
import time

import harness
from harness import check, run

SENDER = "sender.test"

# The zone of the SPF cases (dnsmasq configuration lines).
ZONE = [
    # direct include of the sender domain
    'txt-record=direct.test,"v=spf1 mx include:sender.test ~all"',
    # nested: org -> _spf.org -> sender
    'txt-record=nested.test,"v=spf1 include:_spf.nested.test -all"',
    'txt-record=_spf.nested.test,"v=spf1 ip4:203.0.113.0/24 include:sender.test -all"',
    # redirect to a record that includes the sender
    'txt-record=redir.test,"v=spf1 redirect=_spf.nested.test"',
    # does not include the sender
    'txt-record=other.test,"v=spf1 ip4:198.51.100.7 -all"',
    # syntax error: permerror
    'txt-record=broken.test,"v=spf1 ip4:192.0.2 include:sender.test -all"',
    # a TXT record that is not SPF, and an A record: no SPF record (NODATA for SPF)
    'txt-record=nospf.test,"google-site-verification=abc"',
    "address=/www.nospf.test/192.0.2.80",
    # the platform's own record: the relay's egress range
    'txt-record=sender.test,"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"',
    # ip4 policies for HERALD_SENDER_IPS
    'txt-record=ips.test,"v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all"',
    # mx mechanism: the MX host's address
    'txt-record=mxorg.test,"v=spf1 mx -all"',
    "mx-host=mxorg.test,mail.mxorg.test,10",
    "address=/mail.mxorg.test/192.0.2.25",
    # one record split into several character-strings
    'txt-record=split.test,"v=spf1 include:sen","der.test -all"',
    # a CNAME to a domain with a record
    "cname=alias.test,nested.test",
]


def _long_record():
    """TXT records at long.test over 1232 bytes together (the EDNS0
    payload), so only TCP carries the answer: the SPF record (~800 bytes,
    character-strings of at most 200) and two other TXT records (a
    dnsmasq configuration line must stay under ~1000 bytes)."""
    ips = [f"ip4:10.{i // 250}.{i % 250}.1" for i in range(50)]
    text = "v=spf1 " + " ".join(ips) + " include:sender.test -all"
    parts = [text[i : i + 200] for i in range(0, len(text), 200)]
    lines = ["txt-record=long.test," + ",".join(f'"{p}"' for p in parts)]
    for k in range(2):
        junk = f"verification-{k}=" + "x" * 190
        lines.append("txt-record=long.test," + ",".join([f'"{junk}"'] * 4))
    return lines, text


def _free_dns_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket(
                socket.AF_INET, socket.SOCK_STREAM
            ) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free port for dnsmasq")


def _query(port, name, qtype=16):
    """One raw UDP question; the rcode of the reply or None (no reply)."""
    qid = random.randint(0, 65535)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(q, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except OSError:
            return None
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != qid:
        return None
    return data[3] & 0x0F


class Dnsmasq:
    """dnsmasq serving `lines` on 127.0.0.1:<port>, stopped by PID."""

    def __init__(self, t, lines, ttl=300):
        if not os.path.exists("/usr/sbin/dnsmasq"):
            raise harness.Skip("dnsmasq is not installed (scripts/deps.sh)")
        self.port = _free_dns_port()
        self.dir = t.path(f"dnsmasq{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "dnsmasq.conf")
        with open(conf, "w") as f:
            f.write("local=/test/\n")
            for line in lines:
                f.write(line + "\n")
        self.log = os.path.join(self.dir, "dnsmasq.log")
        argv = [
            "/usr/sbin/dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--local-ttl={ttl}",
            f"--pid-file={os.path.join(self.dir, 'dnsmasq.pid')}",
            f"--conf-file={conf}",
        ]
        if os.getuid() == 0:
            argv.append("--user=root")
        with open(self.log, "wb") as log:
            self.proc = harness._spawn(argv, stdout=log, stderr=log)
        harness.wait_until(
            lambda: self.proc.poll() is not None or _query(self.port, "sender.test") == 0,
            timeout=10,
            what="dnsmasq answering",
        )
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                raise AssertionError(f"dnsmasq exited: {f.read()[-500:]}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def _env(t, dns, **overrides):
    overrides.setdefault("HERALD_SENDER_DOMAIN", SENDER)
    return t.env(None, None, HERALD_DNS=dns, **overrides)


def _check(env, domain, *args, json_out=True, timeout=60):
    argv = ["spf", "check", domain, *args]
    if json_out:
        argv.append("--json")
    cp = run("heraldctl", *argv, env=env, timeout=timeout)
    if not json_out:
        return cp, None
    out = None
    if cp.stdout.strip():
        try:
            out = json.loads(cp.stdout)
        except ValueError as e:
            raise AssertionError(f"not JSON ({e}): {cp.stdout[:300]!r} / {cp.stderr[:300]!r}")
    return cp, out


def _zone(t):
    lines, _ = _long_record()
    return Dnsmasq(t, ZONE + lines)


def test_spf_include_direct_and_nested(t):
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "direct.test")
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    check(o["result"] == "pass" and o["authorised"] is True, f"direct: {o}")
    check(o["record"] == "v=spf1 mx include:sender.test ~all", f"record: {o['record']}")

    cp, o = _check(env, "nested.test")
    check(cp.returncode == 0 and o["authorised"] is True, f"nested: {cp.returncode} {o}")
    doms = [(s["domain"], s["via"], s["depth"]) for s in o["chain"]]
    check(doms[:2] == [("nested.test", "check", 0), ("_spf.nested.test", "include", 1)],
          f"chain: {doms}")
    check(o["chain"][1]["record"].startswith("v=spf1 ip4:203.0.113.0/24"), f"{o['chain']}")

    cp, o = _check(env, "redir.test")
    check(o["authorised"] is True, f"redirect: {o}")
    check(any(s["via"] == "redirect" and s["domain"] == "_spf.nested.test" for s in o["chain"]),
          f"redirect chain: {o['chain']}")

    # Human output: the record, the indented chain, the verdict.
    cp, _ = _check(env, "nested.test", json_out=False)
    check(cp.returncode == 0, f"text exit {cp.returncode}: {cp.stderr}")
    out = cp.stdout
    check("Record:      v=spf1 include:_spf.nested.test -all" in out, out)
    check("\n    include _spf.nested.test: v=spf1 ip4:203.0.113.0/24" in out, out)
    check("Authorised:  yes" in out and "Advice:" not in out, out)


def test_spf_resolver_paths(t):
    """CNAME, character-strings joined, a reply only TCP carries, MX."""
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "alias.test")
    check(o["authorised"] is True and o["record"].startswith("v=spf1 include:_spf.nested"),
          f"cname: {o}")
    cp, o = _check(env, "split.test")
    check(o["record"] == "v=spf1 include:sender.test -all" and o["authorised"], f"split: {o}")
    _, text = _long_record()
    cp, o = _check(env, "long.test")
    check(cp.returncode == 0, f"long: exit {cp.returncode}: {cp.stderr}")
    check(len(text) > 700 and o["record"] == text and o["authorised"] is True,
          f"long: {str(o)[:300]}")
    check(o["ttl"] == 300, f"ttl {o['ttl']}")
    # mx: the MX host's address passes, another does not.
    cp, o = _check(env, "mxorg.test", "--ip", "192.0.2.25")
    check(o["result"] == "pass" and o["mechanism"] == "mx", f"mx: {o}")
    cp, o = _check(env, "mxorg.test", "--ip", "192.0.2.26")
    check(o["result"] == "fail" and not o["authorised"], f"mx other: {o}")


def test_spf_not_included(t):
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "other.test")
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    check(o["result"] == "fail" and o["authorised"] is False, f"{o}")
    check("include:sender.test" in o["advice"], o["advice"])
    check("v=spf1 ip4:198.51.100.7 include:sender.test -all" in o["advice"], o["advice"])
    cp, _ = _check(env, "other.test", json_out=False)
    check(cp.returncode == 0 and "Authorised:  no" in cp.stdout, cp.stdout)
    check("Advice:      " in cp.stdout and "include:sender.test" in cp.stdout, cp.stdout)


def test_spf_no_record(t):
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    for dom in ("missing.test", "nospf.test", "www.nospf.test"):
        cp, o = _check(env, dom)
        check(cp.returncode == 0, f"{dom}: exit {cp.returncode}: {cp.stderr}")
        check(o["result"] == "none" and o["authorised"] is False and o["record"] is None,
              f"{dom}: {o}")
        check(f"v=spf1 include:{SENDER} ~all" in o["advice"], f"{dom}: {o['advice']}")
        check(o["advice"].lower().count("publish") >= 1, o["advice"])


def test_spf_permerror(t):
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "broken.test")
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    check(o["result"] == "permerror" and o["authorised"] is False, f"{o}")
    check("ip4:192.0.2" in o["reason"], o["reason"])
    check("fix" in o["advice"].lower(), o["advice"])


def test_spf_sender_ips(t):
    d = _zone(t)
    dns = f"127.0.0.1:{d.port}"
    env = _env(t, dns, HERALD_SENDER_IPS="192.0.2.10, 192.0.2.11")
    cp, o = _check(env, "ips.test")
    check(cp.returncode == 0 and o["result"] == "pass" and o["authorised"] is True, f"{o}")
    check([x["ip"] for x in o["ips"]] == ["192.0.2.10", "192.0.2.11"], f"{o['ips']}")
    check(all(x["result"] == "pass" for x in o["ips"]), f"{o['ips']}")
    # One of the addresses is not listed: not authorised, that one decides.
    env = _env(t, dns, HERALD_SENDER_IPS="192.0.2.10,192.0.2.99")
    cp, o = _check(env, "ips.test")
    check(cp.returncode == 0 and o["result"] == "fail" and o["authorised"] is False, f"{o}")
    check([x["result"] for x in o["ips"]] == ["pass", "fail"], f"{o['ips']}")
    # The sender's record through the include: in range / IPv6 / out of range.
    env = _env(t, dns, HERALD_SENDER_IPS="192.0.2.50 2001:db8::25")
    cp, o = _check(env, "nested.test")
    check(o["result"] == "pass" and o["authorised"], f"{o}")
    env = _env(t, dns, HERALD_SENDER_IPS="198.18.0.1")
    cp, o = _check(env, "nested.test")
    check(o["result"] == "fail" and not o["authorised"], f"{o}")
    # --ip overrides HERALD_SENDER_IPS.
    cp, o = _check(env, "nested.test", "--ip", "192.0.2.7", "--ip=203.0.113.9")
    check(o["result"] == "pass" and [x["ip"] for x in o["ips"]] == ["192.0.2.7", "203.0.113.9"],
          f"{o}")


def test_spf_dns_silent(t):
    """A server that never answers, and a port where nothing listens:
    temperror, exit 1, never authorised."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        env = _env(t, f"127.0.0.1:{port}")
        t0 = time.monotonic()
        cp, o = _check(env, "nested.test")
        took = time.monotonic() - t0
        check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr}")
        check(o["result"] == "temperror" and o["authorised"] is False, f"{o}")
        check(took < 15, f"took {took:.1f}s")
        cp, _ = _check(env, "nested.test", "--ip", "192.0.2.10", json_out=False)
        check(cp.returncode == 1 and "Authorised:  no" in cp.stdout, cp.stdout)
    finally:
        silent.close()
    # A stopped server: nothing listens on its port any more.
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "direct.test")
    check(o["authorised"] is True, f"{o}")
    d.stop()
    cp, o = _check(env, "direct.test")
    check(cp.returncode == 1 and o["result"] == "temperror" and not o["authorised"], f"{o}")


def test_spf_json_shape(t):
    d = _zone(t)
    env = _env(t, f"127.0.0.1:{d.port}")
    cp, o = _check(env, "nested.test")
    for k, ty in (("domain", str), ("record", str), ("result", str), ("authorised", bool),
                  ("chain", list), ("advice", str)):
        check(isinstance(o.get(k), ty), f"{k}: {o.get(k)!r}")
    check(list(o)[:6] == ["domain", "record", "result", "authorised", "chain", "advice"],
          f"keys {list(o)}")
    check(o["domain"] == "nested.test", o["domain"])
    for s in o["chain"]:
        check(set(s) == {"domain", "record", "via", "depth", "result"}, f"step {s}")
    check(len(cp.stdout.strip().splitlines()) == 1, "one line of JSON")
    check(cp.stderr == "", f"stderr: {cp.stderr}")
    # A trailing dot and upper case are the same domain.
    cp, o2 = _check(env, "NESTED.test.")
    check(o2["authorised"] is True and o2["domain"] == "NESTED.test", f"{o2}")


def test_spf_bad_usage(t):
    env = _env(t, "127.0.0.1:53")
    cases = [
        ((), "missing DOMAIN"),
        (("a.test", "b.test"), "extra"),
        (("localhost",), "not a domain name"),
        (("192.0.2.1",), "not a domain name"),
        (("a..test",), "not a domain name"),
        (("exa mple.test",), "not a domain name"),
        (("bücher.test",), "xn--"),
        (("x" * 64 + ".test",), "63"),
        (("a.test", "--ip", "192.0.2"), "--ip"),
        (("a.test", "--ip"), "--ip needs a value"),
        (("a.test", "--frobnicate"), "unknown flag"),
    ]
    for args, msg in cases:
        cp = run("heraldctl", "spf", "check", *args, env=env)
        check(cp.returncode == 2, f"{args}: exit {cp.returncode}: {cp.stderr}")
        check(msg in cp.stderr, f"{args}: {cp.stderr!r}")
        check(cp.stdout == "", f"{args}: stdout {cp.stdout!r}")
    for dns in ("dns.example", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "1.2.3.4:x"):
        cp = run("heraldctl", "spf", "check", "a.test", env=_env(t, dns))
        check(cp.returncode == 2 and "HERALD_DNS" in cp.stderr, f"{dns}: {cp.returncode} {cp.stderr}")
    cp = run("heraldctl", "spf", "check", "a.test", env=_env(t, "127.0.0.1", HERALD_SENDER_IPS="10.0.0.1,nope"))
    check(cp.returncode == 2 and "HERALD_SENDER_IPS" in cp.stderr and "nope" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "spf", "check", "--help", env=env)
    check(cp.returncode == 0 and "spf check DOMAIN" in cp.stdout, cp.stdout)


def test_spf_ipv6_server(t):
    """HERALD_DNS as [::1]:PORT."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        raise harness.Skip("no IPv6 loopback")
    d = _zone(t)
    # a second dnsmasq process would need another port: listen on ::1 too
    d.stop()
    port = d.port
    conf = os.path.join(d.dir, "dnsmasq.conf")
    argv = ["/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
            "--listen-address=::1", "--bind-interfaces", "--local-ttl=300",
            f"--pid-file={os.path.join(d.dir, 'dnsmasq6.pid')}", f"--conf-file={conf}"]
    if os.getuid() == 0:
        argv.append("--user=root")
    with open(os.path.join(d.dir, "dnsmasq6.log"), "wb") as log:
        p = harness._spawn(argv, stdout=log, stderr=log)
    env = _env(t, f"[::1]:{port}")

    def ready():
        check(p.poll() is None, "dnsmasq on ::1 exited")
        cp, o = _check(env, "nested.test")
        return cp.returncode == 0 and o

    o = harness.wait_until(ready, timeout=10, what="dnsmasq on ::1")
    check(o["authorised"] is True, f"{o}")
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=10)
