#!/usr/bin/env bash
# `make demo` — Herald's main job on this machine, from nothing:
# installs what is missing, builds, starts Redis and a development SMTP
# catcher on loopback, runs a worker on its embedded defaults, enqueues a
# handful of receipts, reminders and confirmations, shows the Message
# Center, then starts herald-api and prints the support console's URL and
# a support token (on a terminal, everything keeps running until Ctrl-C).
# Everything lives under var/demo/ and stays there to look at.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
make -s all

D=var/demo
rm -rf "$D"   # a fresh Redis and mailbox each run; the Message Center keeps history
mkdir -p "$D/mail"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The worker's defaults are Redis on 127.0.0.1:6379 and the relay on
# 127.0.0.1:25; use them when they are free, else free ports.
rport=6379; port_free $rport || { rport=$(free_port); export HERALD_REDIS=redis://127.0.0.1:$rport/0; }
sport=25;   port_free $sport || { sport=$(free_port); export HERALD_RELAY=smtp://127.0.0.1:$sport; }
export HERALD_PLATFORM_NAME=${HERALD_PLATFORM_NAME:-Camp Platform}

# SPF (SPEC §4 path 2) needs DNS: a dnsmasq on loopback serves the demo
# organisations' records (River Bend authorises the platform; Pine Lake
# does not), so nothing is asked of the outside world.
dport=$(free_port)
export HERALD_DNS=127.0.0.1:$dport
dnsmasq --no-daemon --no-resolv --no-hosts --port="$dport" \
  --listen-address=127.0.0.1 --bind-interfaces --local-ttl=300 \
  --txt-record=riverbend.example,"v=spf1 include:sender.localhost ~all" \
  --txt-record=sender.localhost,"v=spf1 ip4:127.0.0.1 -all" \
  --txt-record=pinelake.example,"v=spf1 mx -all" \
  --log-facility="$PWD/$D/dnsmasq.log" $( [ "$(id -u)" = 0 ] && echo --user=root ) 2>/dev/null &
pids+=($!)

redis-server --port "$rport" --bind 127.0.0.1 --dir "$PWD/$D" --appendonly yes \
  --save '' --logfile "$PWD/$D/redis.log" &
pids+=($!)
/usr/bin/python3 deploy/catcher.py --port "$sport" --dir "$D/mail" 2>"$D/catcher.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do port_free "$sport" || break; sleep 0.1; done  # the catcher listens

# Quotas (SPEC §5): Pine Lake may send 2 recipients a day through the
# platform relay; its third message today waits for tomorrow.
echo "== heraldctl org set pine-lake-camp --relay-daily-limit 2"
bin/heraldctl org set pine-lake-camp --name "Pine Lake Camp" --relay-daily-limit 2

# A stored template: a job names it and gives the values; the Message
# Center records the message as rendered.
echo "== heraldctl template set session-receipt"
printf 'Hello {{name}},\nwe received {{amount}} for {{session}}.\nRiver Bend YMCA\n' >"$D/session-receipt.txt"
bin/heraldctl template set session-receipt --subject 'Receipt {{ref}}: {{session}}' \
  --text-file "$D/session-receipt.txt"

echo "== herald-worker (settings: bin/herald-worker --print-config)"
bin/herald-worker 2>"$D/worker.log" &
wpid=$!
pids+=($wpid)

echo "== enqueueing receipts, reminders and confirmations"
ids=$(bin/herald-enqueue --ndjson <<'JOBS'
{"type":"receipt","org":"pine-lake-camp","account":"fam-1042","from":"office@pinelake.example","from_name":"Pine Lake Camp","to":[{"email":"maria.lopez@family.example","name":"María López"}],"subject":"Receipt for your deposit — $250.00","text":"Thank you, María.\nWe received your deposit of $250.00 for Summer Session 2.\n","html":"<p>Thank you, María.</p><p>We received your deposit of <b>$250.00</b> for Summer Session 2.</p>","meta":{"invoice":"INV-20931"}}
{"type":"reminder","org":"pine-lake-camp","account":"fam-1042","from":"office@pinelake.example","from_name":"Pine Lake Camp","to":["maria.lopez@family.example"],"subject":"Reminder: medical form due Friday","text":"Please upload Sofia's medical form by Friday.\n","priority":"low"}
{"type":"confirmation","org":"river-bend-ymca","account":"acct-77","from":"registrar@riverbend.example","to":[{"email":"j.chen@family.example","name":"Jun Chen"}],"cc":[{"email":"grandma.chen@family.example","name":"Mei Chen"}],"bcc":["records@riverbend.example"],"subject":"Registration confirmed: Day Camp, week 3 ✓","text":"Jun is registered for Day Camp, week 3 (July 14–18).\n","headers":{"X-Camp-Session":"day-3"},"priority":"high"}
{"type":"receipt","org":"river-bend-ymca","account":"acct-77","from":"registrar@riverbend.example","from_name":"River Bend YMCA","to":["j.chen@family.example"],"subject":"Receipt #5521","text":"Payment received: $120.00.\n","attachments":[{"filename":"receipt-5521.txt","content_type":"text/plain","content_base64":"UGF5bWVudCByZWNlaXZlZDogJDEyMC4wMAo="}]}
{"type":"receipt","org":"river-bend-ymca","account":"acct-77","from":"registrar@riverbend.example","from_name":"River Bend YMCA","to":[{"email":"j.chen@family.example","name":"Jun Chen"}],"template":"session-receipt","data":{"name":"Jun","amount":"$85.00","session":"Swim Week","ref":"R-5522"}}
JOBS
)
echo "$ids"
# An application in any language can push raw JSON; a bad job goes to dead.
redis-cli -p "$rport" LPUSH herald:queue:normal \
  '{"type":"receipt","org":"x","account":"y","from":"not-an-address","to":["a@b.example"],"subject":"?","text":"?"}' >/dev/null

for id in $ids; do
  for _ in $(seq 100); do
    bin/heraldctl mc show "$id" --json 2>/dev/null | grep -q '"status":"sent"' && break
    sleep 0.1
  done
done

echo; echo "== a third Pine Lake message today: over its quota, deferred to tomorrow"
over=$(bin/herald-enqueue '{"type":"reminder","org":"pine-lake-camp","account":"fam-1042","from":"office@pinelake.example","from_name":"Pine Lake Camp","to":["maria.lopez@family.example"],"subject":"Reminder: bus schedule","text":"The bus leaves at 8:15.\n"}')
for _ in $(seq 100); do
  bin/heraldctl mc show "$over" --json 2>/dev/null | grep -q '"status":"deferred"' && break
  sleep 0.1
done
bin/heraldctl mc show "$over" | grep -E '^(status|next attempt|last error):'

echo; echo "== heraldctl mc list"
bin/heraldctl mc list
first=$(echo "$ids" | head -1)
echo; echo "== heraldctl mc show $first"
bin/heraldctl mc show "$first"
tpl=$(echo "$ids" | tail -1)
echo; echo "== the templated receipt as recorded: heraldctl mc show $tpl"
bin/heraldctl mc show "$tpl"
echo; echo "== heraldctl dead list"
bin/heraldctl dead list
echo; echo "== heraldctl queue stats"
bin/heraldctl queue stats
echo; echo "== what the SMTP catcher received ($D/mail/1.eml, headers)"
sed -n '1,/^\r\?$/p' "$D/mail/1.eml" | tr -d '\r'

# herald-api (SPEC §9) on the same embedded SQLite Message Center: the
# JSON API and the support console, with a support token that may resend.
aport=8080; port_free $aport || aport=$(free_port)
echo; echo "== herald-api on 127.0.0.1:$aport (heraldctl token create --role support --resend)"
token=$(bin/heraldctl token create --name demo-support --role support --resend)
HERALD_API_LISTEN=127.0.0.1:$aport bin/herald-api 2>"$D/api.log" &
apid=$!
pids+=($apid)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "GET /v1/messages?org=river-bend-ymca&limit=2:"
curl -fsS -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$aport/v1/messages?org=river-bend-ymca&limit=2" | head -c 700; echo
echo
echo "support console: http://127.0.0.1:$aport/"
echo "support token:   $token"
echo "logs: $D/worker.log $D/api.log; Message Center: ./var/mc.db; mail: $D/mail/"
if [ -t 0 ]; then
  echo "The worker and herald-api keep running (a resend from the console is delivered"
  echo "to $D/mail/); press Ctrl-C to stop them."
  wait "$apid" || true
fi
kill -TERM "$wpid"; wait "$wpid" || true
