#!/usr/bin/python3
"""mime_check -- parse the sample messages bin/test_mime wrote (MIME_OUT=DIR)
with Python's email package under the strict default policy and compare
them with the expectations in each sample-NN.json.

Usage: /usr/bin/python3 tests/unit/mime_check.py DIR
Prints "mime: N passed, N failed"; exits 1 on any failure (or no samples).
"""

import hashlib
import json
import os
import re
import sys
from email import policy
from email.parser import BytesParser

passed = 0
failed = 0

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
DOT_ATOM = ATEXT + r"(?:\." + ATEXT + r")*"
MSGID_RE = re.compile(r"^<" + DOT_ATOM + "@" + DOT_ATOM + r">$")


def check(sample, cond, what, got=None, want=None):
    global passed, failed
    if cond:
        passed += 1
        return True
    failed += 1
    msg = "FAIL %s: %s" % (sample, what)
    if got is not None or want is not None:
        msg += "\n  got:  %r\n  want: %r" % (got, want)
    print(msg, file=sys.stderr)
    return False


def norm(s):
    return s.replace("\r\n", "\n").replace("\r", "\n")


def check_raw(name, raw, exp):
    lines = raw.split(b"\r\n")
    check(name, raw.endswith(b"\r\n"), "ends with CRLF")
    bare = [i for i, l in enumerate(lines) if b"\r" in l or b"\n" in l]
    check(name, not bare, "CRLF line ends only", bare[:3], [])
    longest = max(len(l) for l in lines)
    check(name, longest <= 998, "no line over 998 octets", longest, 998)
    starts = [l for l in lines if l.lower().startswith((b"bcc:", b"evil"))]
    check(name, not starts, "no line starts with Bcc: or evil", starts, [])
    for a in exp["bcc"]:
        check(name, a["email"].encode() not in raw, "bcc address absent",
              a["email"], None)
        if a["name"]:
            check(name, a["name"].encode() not in raw, "bcc name absent",
                  a["name"], None)
    try:
        raw.decode("ascii")
        check(name, True, "7-bit clean")
    except UnicodeDecodeError as e:
        check(name, False, "7-bit clean", str(e), None)


def check_defects(name, msg):
    for part in msg.walk():
        check(name, not part.defects, "no defects in a %s part" %
              part.get_content_type(), part.defects, [])
        for k, v in part.items():
            d = getattr(v, "defects", ())
            check(name, not d, "no defects in header %s" % k, d, ())


def addrs(header):
    if header is None:
        return None
    return [{"name": a.display_name, "email": a.addr_spec}
            for a in header.addresses]


def check_headers(name, msg, exp):
    multipart = exp["content_type"].startswith("multipart/")
    order = ["Date", "From"]
    if exp["reply_to"] is not None:
        order.append("Reply-To")
    order.append("To")
    if exp["cc"]:
        order.append("Cc")
    order += ["Subject", "Message-ID", "MIME-Version", "X-Herald-Id"]
    order += [h[0] for h in exp["headers"]]
    order.append("Content-Type")
    if not multipart:
        order.append("Content-Transfer-Encoding")
    check(name, msg.keys() == order, "header order", msg.keys(), order)

    check(name, str(msg["Subject"]) == exp["subject"], "Subject",
          str(msg["Subject"]), exp["subject"])
    dt = msg["Date"].datetime
    check(name, dt is not None and int(dt.timestamp()) == exp["date_epoch"],
          "Date", dt, exp["date_epoch"])
    check(name, addrs(msg["From"]) == [exp["from"]], "From",
          addrs(msg["From"]), [exp["from"]])
    want_rt = None if exp["reply_to"] is None else [
        {"name": "", "email": exp["reply_to"]}]
    check(name, addrs(msg["Reply-To"]) == want_rt, "Reply-To",
          addrs(msg["Reply-To"]), want_rt)
    check(name, addrs(msg["To"]) == exp["to"], "To", addrs(msg["To"]),
          exp["to"])
    want_cc = exp["cc"] or None
    check(name, addrs(msg["Cc"]) == want_cc, "Cc", addrs(msg["Cc"]), want_cc)
    for part in msg.walk():
        check(name, "Bcc" not in part, "no Bcc header")
    mid = str(msg["Message-ID"])
    check(name, mid == exp["message_id"], "Message-ID", mid,
          exp["message_id"])
    check(name, MSGID_RE.match(mid) is not None, "Message-ID is a msg-id",
          mid, None)
    check(name, str(msg["MIME-Version"]) == "1.0", "MIME-Version")
    ids = [str(v) for v in msg.get_all("X-Herald-Id", [])]
    check(name, ids == [exp["herald_id"]], "one X-Herald-Id", ids,
          [exp["herald_id"]])
    for hname, value in exp["headers"]:
        got = [str(v) for v in msg.get_all(hname, [])]
        check(name, got == [value], "header " + hname, got, [value])


def check_encodings(name, msg):
    for part in msg.walk():
        if part.is_multipart():
            continue
        cte = part.get("Content-Transfer-Encoding", "7bit").lower()
        raw = part.get_payload(decode=False)
        lines = raw.split("\r\n") if "\r\n" in raw else raw.split("\n")
        longest = max((len(l) for l in lines), default=0)
        if cte in ("quoted-printable", "base64"):
            check(name, longest <= 76, "%s lines <= 76" % cte, longest, 76)
        else:
            check(name, cte == "7bit", "known transfer encoding", cte, None)
            check(name, all(ord(c) < 128 for c in raw), "7bit is ASCII")


def body_of(msg, subtype):
    part = msg.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != "text/" + subtype:
        return None, None
    return part, part.get_content()


def check_bodies(name, msg, exp):
    single = not exp["content_type"].startswith("multipart/")
    check(name, msg.get_content_type() == exp["content_type"],
          "Content-Type", msg.get_content_type(), exp["content_type"])
    for subtype in ("plain", "html"):
        want = exp["text" if subtype == "plain" else "html"]
        part, got = body_of(msg, subtype)
        if want is None:
            check(name, part is None, "no text/%s body" % subtype)
            continue
        if not check(name, part is not None, "a text/%s body" % subtype):
            continue
        check(name, part.get_content_charset() == "utf-8",
              "text/%s charset" % subtype, part.get_content_charset(),
              "utf-8")
        w = norm(want)
        if single and w and not w.endswith("\n"):
            w += "\n"  # the message's last line end
        check(name, norm(got) == w, "text/%s body" % subtype, norm(got), w)
    if exp["content_type"] == "multipart/alternative" or (
            exp["text"] is not None and exp["html"] is not None):
        alt = [p for p in msg.walk()
               if p.get_content_type() == "multipart/alternative"]
        if check(name, len(alt) == 1, "one multipart/alternative"):
            kinds = [p.get_content_type() for p in alt[0].iter_parts()]
            check(name, kinds == ["text/plain", "text/html"],
                  "alternative is text then html", kinds, None)


def check_attachments(name, msg, exp):
    got = list(msg.iter_attachments()) if msg.is_multipart() else []
    check(name, len(got) == len(exp["attachments"]), "attachment count",
          len(got), len(exp["attachments"]))
    for part, want in zip(got, exp["attachments"]):
        data = part.get_payload(decode=True) or b""
        check(name, part.get_content_disposition() == "attachment",
              "disposition", part.get_content_disposition(), "attachment")
        # get_filename() strips surrounding whitespace
        check(name, part.get_filename() == want["filename"].strip(),
              "filename", part.get_filename(), want["filename"])
        check(name, part.get_param("name") is not None, "name parameter")
        check(name, part.get_content_type() == want["content_type"].lower(),
              "attachment type", part.get_content_type(),
              want["content_type"])
        check(name, len(data) == want["size"], "attachment size", len(data),
              want["size"])
        sha = hashlib.sha256(data).hexdigest()
        check(name, sha == want["sha256"], "attachment sha256 " +
              want["filename"], sha, want["sha256"])
    if exp["attachments"]:
        first = next(msg.iter_parts())
        check(name, first.get_content_disposition() is None,
              "body part comes first")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    d = sys.argv[1]
    names = sorted(f for f in os.listdir(d) if f.endswith(".eml"))
    check(d, names, "samples present")
    for f in names:
        name = f[:-4]
        jpath = os.path.join(d, name + ".json")
        if not check(name, os.path.exists(jpath), "expectations present"):
            continue
        with open(jpath, encoding="utf-8") as fh:
            exp = json.load(fh)
        with open(os.path.join(d, f), "rb") as fh:
            raw = fh.read()
        check_raw(name, raw, exp)
        try:
            msg = BytesParser(policy=policy.default).parsebytes(raw)
            check_defects(name, msg)
            check_headers(name, msg, exp)
            check_encodings(name, msg)
            check_bodies(name, msg, exp)
            check_attachments(name, msg, exp)
        except Exception as e:  # the parser refusing the message is a failure
            check(name, False, "parse: %s: %s" % (type(e).__name__, e))
    print("mime: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
