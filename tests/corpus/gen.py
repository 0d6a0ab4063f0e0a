#!/usr/bin/python3
"""Writes the job corpus: hostile/*.job + hostile/expect.tsv, valid/*.job.

Run from anywhere: /usr/bin/python3 tests/corpus/gen.py
The output is deterministic; the files are checked in, this script is how
they were made. Each hostile file holds exactly one fault, so the field
and message the validator reports are fixed. expect.tsv lines are
FILENAME<TAB>FIELD<TAB>SUBSTRING-OF-MESSAGE, FIELD "-" for the top level.
The >10 MiB case is built by tests/unit/test_job.c, not stored here.
"""

import base64
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))


def base():
    return {
        "type": "receipt",
        "org": "acme",
        "account": "acct-1",
        "from": "billing@acme.example",
        "to": ["alice@example.com"],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
    }


def enc(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def job(**changes):
    j = base()
    for k, v in changes.items():
        if v is DROP:
            j.pop(k, None)
        else:
            j[k] = v
    return enc(j)


DROP = object()
hostile = []  # (name, bytes, field, substring)


def h(name, data, field, sub):
    hostile.append((name, data, field, sub))


# ---- not a JSON object --------------------------------------------------
h("not_json", b"hello, world", "-", "not JSON")
h("truncated", job()[:-12], "-", "not JSON")
h("trailing_garbage", job() + b" {}", "-", "not JSON")
h("array", b'[{"type":"receipt"}]', "-", "job must be a JSON object")
h("string", b'"receipt"', "-", "job must be a JSON object")
h("number", b"42", "-", "job must be a JSON object")
h("null", b"null", "-", "job must be a JSON object")
h("true", b"true", "-", "job must be a JSON object")
h("empty", b"", "-", "not JSON")
h("whitespace", b" \r\n\t ", "-", "not JSON")
h("single_quotes", b"{'type':'receipt'}", "-", "not JSON")
h("duplicate_key",
  job().replace(b'{"type":"receipt"', b'{"type":"receipt","type":"notice"'),
  "-", "duplicate object key")
h("duplicate_subject", job()[:-1] + b',"subject":"again"}', "-",
  "duplicate object key")
h("nul_escape", job(subject="a\0b"), "-", "not JSON")
h("lone_surrogate_escape", job().replace(b"Your receipt", b"Your \\ud800"),
  "-", "not JSON")
h("deep_nesting",
  job()[:-1] + b',"meta":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
  "-", "not JSON")
h("big_integer", job()[:-1] + b',"meta":{"n":123456789012345678901234567890}}',
  "-", "not JSON")

# ---- bytes that are not UTF-8 -------------------------------------------
utf8 = {
    "utf8_ff": b"\xff",
    "utf8_fe_fe": b"\xfe\xfe",
    "utf8_lone_continuation": b"\x80",
    "utf8_overlong_slash": b"\xc0\xaf",
    "utf8_overlong_3byte": b"\xe0\x80\xaf",
    "utf8_overlong_4byte": b"\xf0\x80\x80\xaf",
    "utf8_surrogate": b"\xed\xa0\x80",
    "utf8_surrogate_pair": b"\xed\xa0\xbd\xed\xb8\x80",
    "utf8_above_max": b"\xf4\x90\x80\x80",
    "utf8_truncated": b"\xe2\x82",
    "utf8_latin1": b"caf\xe9",
}
for name, bad in utf8.items():
    h(name, job().replace(b"Your receipt", b"Your " + bad), "-",
      "not valid UTF-8 at byte")
h("utf8_in_key", job()[:-1] + b',"x\xfe":1}', "-", "not valid UTF-8 at byte")
h("utf8_truncated_at_end", job()[:-1] + b"\xe2\x82", "-",
  "not valid UTF-8 at byte")

# ---- unknown members ----------------------------------------------------
j = base()
del j["subject"]
j["subjet"] = "Your receipt"
h("unknown_field_subjet", enc(j), "subjet", "unknown field")
h("unknown_field_bcc_typo", job(bbc=["x@example.com"]), "bbc", "unknown field")
h("unknown_to_member", job(to=[{"email": "a@example.com", "nmae": "A"}]),
  "to[0].nmae", "unknown field")
h("unknown_attachment_member",
  job(attachments=[{"filename": "a.txt", "content_base64": "QQ==",
                    "size": 1}]),
  "attachments[0].size", "unknown field")

# ---- wrong JSON types ---------------------------------------------------
wrong = [
    ("id", 123, "must be a string"),
    ("type", 1, "must be a string"),
    ("org", ["acme"], "must be a string"),
    ("account", {"id": 1}, "must be a string"),
    ("from", 5, "must be a string"),
    ("from_name", True, "must be a string"),
    ("reply_to", 1, "must be a string"),
    ("to", "alice@example.com", "must be an array"),
    ("cc", {"email": "c@example.com"}, "must be an array"),
    ("bcc", "b@example.com", "must be an array"),
    ("subject", 7, "must be a string"),
    ("text", 1, "must be a string"),
    ("html", ["<p>"], "must be a string"),
    ("template", 3, "must be a string"),
    ("data", [1, 2], "must be an object"),
    ("attachments", {"filename": "a"}, "must be an array"),
    ("send_at", 1700000000, "must be a string"),
    ("priority", 1, "must be a string"),
    ("headers", [["X-Foo", "1"]], "must be an object"),
    ("meta", "opaque", "must be an object"),
]
for field, value, sub in wrong:
    h("type_" + field, job(**{field: value}), field, sub)
h("type_id_null", job(id=None), "id", "must be a string")
h("type_from_name_null", job(from_name=None), "from_name", "must be a string")
h("type_subject_null", job(subject=None), "subject", "must be a string")
h("type_to_entry_number", job(to=[5]), "to[0]",
  "must be an address string or an object")
h("type_to_entry_null", job(to=["a@example.com", None]), "to[1]",
  "must be an address string or an object")
h("type_to_email", job(to=[{"email": 5}]), "to[0].email", "must be a string")
h("type_to_name", job(to=[{"email": "a@example.com", "name": 5}]),
  "to[0].name", "must be a string")
h("type_attachment_entry", job(attachments=["a.txt"]), "attachments[0]",
  "must be an object")
h("type_attachment_base64",
  job(attachments=[{"filename": "a.txt", "content_base64": 65}]),
  "attachments[0].content_base64", "must be a string")
h("type_header_value", job(headers={"X-Foo": 5}), "headers.X-Foo",
  "must be a string")

# ---- CR, LF, CRLF in every header field ---------------------------------
breaks = {"cr": "\r", "lf": "\n", "crlf": "\r\n"}
for tag, br in breaks.items():
    inj = br + "Bcc: victim@evil.example"
    h(f"{tag}_subject", job(subject="Hello" + inj), "subject",
      "contains a line break")
    h(f"{tag}_from_name", job(from_name="Acme" + inj), "from_name",
      "contains a line break")
    h(f"{tag}_to_name", job(to=[{"email": "alice@example.com",
                                 "name": "Alice" + inj}]),
      "to[0].name", "contains a line break")
    h(f"{tag}_cc_name", job(cc=[{"email": "carol@example.com",
                                 "name": "Carol" + inj}]),
      "cc[0].name", "contains a line break")
    h(f"{tag}_to_addr", job(to=["alice@example.com", "bob@example.com" + inj]),
      "to[1]", "contains a line break")
    h(f"{tag}_bcc_addr", job(bcc=["bob@example.com" + br]), "bcc[0]",
      "contains a line break")
    h(f"{tag}_reply_to", job(reply_to="help@acme.example" + inj), "reply_to",
      "contains a line break")
    h(f"{tag}_from", job(**{"from": "billing@acme.example" + inj}), "from",
      "contains a line break")
    h(f"{tag}_header_value", job(headers={"X-Campaign": "spring" + inj}),
      "headers.X-Campaign", "contains a line break")
    esc = {"cr": "\\r", "lf": "\\n", "crlf": "\\r\\n"}[tag]
    h(f"{tag}_header_name", job(headers={"X-Foo" + br + "Bcc": "x"}),
      "headers.X-Foo" + esc + "Bcc", "contains a line break")
    h(f"{tag}_attachment_filename",
      job(attachments=[{"filename": "invoice" + br + ".pdf",
                        "content_base64": "QQ=="}]),
      "attachments[0].filename", "contains a line break")

# ---- other control characters -------------------------------------------
h("ctl_subject_tab", job(subject="a\tb"), "subject",
  "contains a control character (U+0009)")
h("ctl_subject_esc", job(subject="a\x1b[31mred"), "subject",
  "contains a control character (U+001B)")
h("ctl_subject_del", job(subject="a\x7fb"), "subject",
  "contains a control character (U+007F)")
h("ctl_subject_nel", job(subject="a\u0085b"), "subject",
  "contains a control character (U+0085)")
h("ctl_from_name_u2028", job(from_name="Acme\u2028Bcc: x"), "from_name",
  "contains a control character (U+2028)")
h("ctl_header_value_u2029", job(headers={"X-Foo": "a\u2029b"}),
  "headers.X-Foo", "contains a control character (U+2029)")
h("ctl_to_name_c1", job(to=[{"email": "a@example.com", "name": "A\u009bB"}]),
  "to[0].name", "contains a control character (U+009B)")
h("ctl_filename_bell",
  job(attachments=[{"filename": "a\x07.txt", "content_base64": ""}]),
  "attachments[0].filename", "contains a control character (U+0007)")

# ---- addresses ----------------------------------------------------------
h("from_not_address", job(**{"from": "billing"}), "from", "not an address")
h("from_display_form", job(**{"from": "Billing <billing@acme.example>"}),
  "from", "not an address")
h("from_angle", job(**{"from": "<billing@acme.example>"}), "from",
  "not an address (contains an angle bracket)")
h("to_third_not_address",
  job(to=["a@example.com", "b@example.com", "not an address"]), "to[2]",
  "not an address")
h("to_two_ats", job(to=["a@b@example.com"]), "to[0]", "not an address")
h("to_double_dot", job(to=["a..b@example.com"]), "to[0]",
  "not an address (misplaced dot in local part)")
h("to_trailing_dot_local", job(to=["a.@example.com"]), "to[0]",
  "not an address")
h("to_local_65", job(to=["a" * 65 + "@example.com"]), "to[0]",
  "local part longer than 64 bytes")
h("to_255_bytes",
  job(to=["a" * 64 + "@" + "b" * 63 + "." + "b" * 63 + "." + "b" * 54 +
          ".example"]),
  "to[0]", "longer than 254 bytes")
h("to_label_64", job(to=["a@" + "b" * 64 + ".example"]), "to[0]",
  "domain label longer than 63 bytes")
h("to_domain_hyphen", job(to=["a@-example.com"]), "to[0]",
  "domain label starts with a hyphen")
h("to_domain_trailing_dot", job(to=["a@example.com."]), "to[0]",
  "not an address")
h("to_domain_underscore", job(to=["a@ex_ample.com"]), "to[0]",
  "bad character in domain")
h("to_quoted_space", job(to=['"a b"@example.com']), "to[0]",
  "not an address (contains a space)")
h("to_non_ascii", job(to=["jöns@example.com"]), "to[0]",
  "not an address (not ASCII text)")
h("to_object_no_email", job(to=[{"name": "Alice"}]), "to[0].email",
  "is required")
h("to_object_bad_email", job(to=[{"email": "alice", "name": "Alice"}]),
  "to[0].email", "not an address")
h("reply_to_no_local", job(reply_to="@example.com"), "reply_to",
  "not an address")
h("cc_bad_literal", job(cc=["a@[300.1.1.1]"]), "cc[0]",
  "not an address (bad address literal)")
h("bcc_empty_string", job(bcc=[""]), "bcc[0]", "not an address (empty)")

# ---- recipient counts ---------------------------------------------------
h("to_empty", job(to=[]), "to", "must have at least one recipient")
h("to_51", job(to=[f"u{i}@example.com" for i in range(51)]), "to",
  "has 51 recipients, at most 50")
h("rcpt_101", job(to=[f"t{i}@example.com" for i in range(50)],
                  cc=[f"c{i}@example.com" for i in range(50)],
                  bcc=["b@example.com"]),
  "to+cc+bcc", "101 recipients, at most 100")
h("rcpt_cc_200", job(cc=[f"c{i}@example.com" for i in range(200)]),
  "to+cc+bcc", "201 recipients, at most 100")

# ---- required members ---------------------------------------------------
for field in ("type", "org", "account", "from", "to", "subject"):
    h("missing_" + field, job(**{field: DROP}), field, "is required")
h("missing_body", job(text=DROP), "text", "text or html is required")
h("missing_everything", b"{}", "type", "is required")

# ---- tokens -------------------------------------------------------------
h("id_bad_chars", job(id="order 42"), "id",
  "contains a character outside [A-Za-z0-9._:-]")
h("id_slash", job(id="a/b"), "id", "contains a character outside")
h("id_too_long", job(id="a" * 129), "id", "is 129 bytes, at most 128")
h("id_empty", job(id=""), "id", "is empty")
h("type_upper", job(type="Receipt"), "type",
  "contains a character outside [a-z0-9_-]")
h("type_too_long", job(type="r" * 33), "type", "is 33 bytes, at most 32")
h("org_too_long", job(org="o" * 65), "org", "is 65 bytes, at most 64")
h("org_space", job(org="acme corp"), "org", "contains a character outside")
h("account_slash", job(account="a/b"), "account",
  "contains a character outside [A-Za-z0-9._-]")
h("account_empty", job(account=""), "account", "is empty")
h("template_path", job(template="../../etc/passwd"), "template",
  "contains a character outside")

# ---- subject, names, data -----------------------------------------------
h("subject_999", job(subject="s" * 999), "subject",
  "is 999 bytes, at most 998")
h("subject_999_utf8", job(subject="é" * 499 + "s"), "subject",
  "is 999 bytes, at most 998")
h("from_name_257", job(from_name="n" * 257), "from_name",
  "is 257 bytes, at most 256")
h("data_without_template", job(data={"n": 1}), "data",
  "only allowed with template")

# ---- attachments --------------------------------------------------------


def att(**kw):
    a = {"filename": "a.txt", "content_base64": "QQ=="}
    for k, v in kw.items():
        if v is DROP:
            a.pop(k)
        else:
            a[k] = v
    return job(attachments=[a])


B64 = "attachments[0].content_base64"
h("b64_bad_char", att(content_base64="abc$"), B64,
  "not valid base64: unexpected character at offset 3")
h("b64_url_alphabet", att(content_base64="ab-_"), B64,
  "not valid base64: unexpected character")
h("b64_bad_padding", att(content_base64="QQ="), B64,
  "not valid base64: bad padding")
h("b64_no_padding", att(content_base64="QQ"), B64,
  "not valid base64: length is not a multiple of 4")
h("b64_padding_bits", att(content_base64="QR=="), B64,
  "not valid base64: non-zero padding bits")
h("b64_data_after_padding", att(content_base64="QQ==QQ=="), B64,
  "not valid base64: data after padding")
h("b64_early_equals", att(content_base64="Q==="), B64, "not valid base64")
h("b64_tab", att(content_base64="QU\tJD"), B64,
  "not valid base64: unexpected character at offset 2")
h("b64_missing", att(content_base64=DROP), B64, "is required")
h("attach_filename_dotdot", att(filename=".."), "attachments[0].filename",
  "must not be \".\" or \"..\"")
h("attach_filename_path", att(filename="../../etc/passwd"),
  "attachments[0].filename", "must not contain '/' or '\\'")
h("attach_filename_backslash", att(filename="..\\boot.ini"),
  "attachments[0].filename", "must not contain")
h("attach_filename_empty", att(filename=""), "attachments[0].filename",
  "is empty")
h("attach_filename_256", att(filename="f" * 256), "attachments[0].filename",
  "is 256 bytes, at most 255")
h("attach_filename_missing", att(filename=DROP), "attachments[0].filename",
  "is required")
h("attach_content_type_params", att(content_type="text/plain; charset=utf-8"),
  "attachments[0].content_type", "must be type/subtype")
h("attach_content_type_no_slash", att(content_type="pdf"),
  "attachments[0].content_type", "must be type/subtype")
h("attach_content_type_crlf",
  att(content_type="text/plain\r\nX-Evil: 1"), "attachments[0].content_type",
  "contains a line break")
h("attach_33",
  job(attachments=[{"filename": f"f{i}.txt", "content_base64": ""}
                   for i in range(33)]),
  "attachments", "has 33 entries, at most 32")
h("attach_second_bad",
  job(attachments=[{"filename": "ok.txt", "content_base64": "QQ=="},
                   {"filename": "bad.txt", "content_base64": "%%%%"}]),
  "attachments[1].content_base64", "not valid base64")

# ---- send_at, priority --------------------------------------------------
h("send_at_words", job(send_at="tomorrow"), "send_at",
  "not an RFC 3339 time")
h("send_at_no_zone", job(send_at="2026-11-26T14:58:07"), "send_at",
  "not an RFC 3339 time")
h("send_at_feb30", job(send_at="2026-02-30T10:00:00Z"), "send_at",
  "not an RFC 3339 time")
h("send_at_trailing", job(send_at="2026-11-26T14:58:07Z junk"), "send_at",
  "not an RFC 3339 time")
h("priority_urgent", job(priority="urgent"), "priority",
  "must be high, normal or low")
h("priority_upper", job(priority="HIGH"), "priority",
  "must be high, normal or low")

# ---- headers ------------------------------------------------------------
h("header_not_x", job(headers={"Reply-To": "x@evil.example"}),
  "headers.Reply-To", "must start with X-")
h("header_bcc", job(headers={"Bcc": "x@evil.example"}), "headers.Bcc",
  "must start with X-")
h("header_x_only", job(headers={"X-": "1"}), "headers.X-",
  "header name must go on after X-")
h("header_herald", job(headers={"X-Herald-Id": "forged"}),
  "headers.X-Herald-Id", "X-Herald- headers are reserved")
h("header_herald_lower", job(headers={"x-herald-path": "relay"}),
  "headers.x-herald-path", "reserved")
h("header_colon", job(headers={"X-Foo:Bar": "1"}), "headers.X-Foo:Bar",
  "printable ASCII without ':' or space")
h("header_space", job(headers={"X-Foo Bar": "1"}), "headers.X-Foo Bar",
  "printable ASCII")
h("header_non_ascii", job(headers={"X-Grüße": "1"}), "headers.X-Grüße",
  "printable ASCII")
name77 = "X-" + "n" * 75
h("header_name_77", job(headers={name77: "1"}), ("headers." + name77)[:63],
  "header name is 77 bytes, at most 76")
h("header_value_901", job(headers={"X-Foo": "v" * 901}), "headers.X-Foo",
  "value is 901 bytes, at most 900")
h("headers_33", job(headers={f"X-H{i}": "1" for i in range(33)}), "headers",
  "has 33 entries, at most 32")
h("header_dup_case", job(headers={"X-Foo": "a", "x-foo": "b"}),
  "headers.x-foo", "duplicate header name")
h("header_empty_name", job(headers={"": "1"}), "headers.",
  "must start with X-")


# ---- valid jobs ---------------------------------------------------------
def b64(data, wrap=False):
    s = base64.b64encode(data).decode()
    if wrap:
        s = "\r\n".join(s[i:i + 76] for i in range(0, len(s), 76))
    return s


valid = {
    "minimal": base(),
    "utf8_names": dict(base(),
                       from_name="Café Zoë — Ärzte & Co",
                       subject="Ваш чек №42 ✓ 🎉 — 注文確認",
                       to=[{"email": "taro@example.jp", "name": "山田 太郎"},
                           {"email": "zoe@example.fr", "name": "Zoë \"Z\" O'Neil"}],
                       text="Grüße, 世界! 🎉\n"),
    "cc_bcc": dict(base(),
                   reply_to="support@acme.example",
                   to=["alice@example.com",
                       {"email": "bob@example.com", "name": "Bob"}],
                   cc=[{"email": "carol@example.com", "name": "Carol C."},
                       "dave@example.com"],
                   bcc=["audit@acme.example"]),
    "attachments": dict(base(), attachments=[
        {"filename": "invoice 2026-11.pdf", "content_type": "Application/PDF",
         "content_base64": b64(bytes(range(256)) * 3, wrap=True)},
        {"filename": "notes.txt", "content_base64": b64(b"hello\n")},
        {"filename": "empty.bin", "content_base64": ""},
        {"filename": "Résumé.txt", "content_type": "text/plain",
         "content_base64": b64("é".encode())},
    ]),
    "html_text": dict(base(), html="<p>Thanks for your <b>order</b>.</p>\n",
                      text="Thanks\tfor your order.\r\nLine two.\n"),
    "html_only": dict(base(), text=DROP,
                      html="<html><body><p>Hi</p></body></html>"),
    "template": {"type": "reminder", "org": "acme", "account": "acct-2",
                 "from": "noreply@acme.example",
                 "to": [{"email": "alice@example.com", "name": "Alice"}],
                 "template": "reminder.v2",
                 "data": {"name": "Alice", "due": "2026-12-01",
                          "items": [{"sku": "A-1", "qty": 2}],
                          "total": 12.5, "paid": False, "note": None}},
    "headers_priority": dict(base(), id="order:42.receipt_v1-a",
                             priority="high",
                             headers={"X-Campaign": "spring-2026",
                                      "x-ticket": "T-1 — ünïcode",
                                      "X-Empty": ""}),
    "send_at_meta": dict(base(), send_at="2026-11-26T09:58:07.5-05:00",
                         priority="low",
                         meta={"order": 42, "tags": ["a", "b"],
                               "nested": {"ok": True, "ratio": 0.25}}),
    "rcpt_100": dict(base(), to=[f"t{i}@example.com" for i in range(50)],
                     cc=[f"c{i}@example.com" for i in range(40)],
                     bcc=[f"b{i}@example.com" for i in range(10)]),
    "address_forms": dict(base(), **{
        "from": "billing+receipts@mail.acme.example",
        "reply_to": "\"odd.\\\"quoted\\\"\"@acme.example",
        "to": ["root@localhost", "ops@[192.0.2.10]",
               "o'brien{x}@sub-domain.example.co.uk",
               "a" * 64 + "@example.com"]}),
    "subject_998": dict(base(), subject="s" * 998),
}


def write():
    hdir = os.path.join(HERE, "hostile")
    vdir = os.path.join(HERE, "valid")
    for d in (hdir, vdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    names = set()
    lines = []
    for name, data, field, sub in hostile:
        assert name not in names, name
        names.add(name)
        assert "\t" not in field and "\n" not in field and "\r" not in field
        assert "\t" not in sub and "\n" not in sub
        with open(os.path.join(hdir, name + ".job"), "wb") as f:
            f.write(data)
        lines.append(f"{name}.job\t{field}\t{sub}\n")
    with open(os.path.join(hdir, "expect.tsv"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    for name, j in valid.items():
        j = {k: v for k, v in j.items() if v is not DROP}
        with open(os.path.join(vdir, name + ".job"), "wb") as f:
            f.write(json.dumps(j, ensure_ascii=False, indent=1).encode() +
                    b"\n")
    print(f"{len(hostile)} hostile, {len(valid)} valid")


if __name__ == "__main__":
    write()
