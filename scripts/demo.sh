#!/usr/bin/env bash
# Sets up and runs crm-worker on its embedded default: installs what is
# needed, builds, starts a throwaway PostgreSQL and `crm-worker run` with
# the embedded development broker, publishes sample events, and shows what
# landed (rows and metrics). Ctrl-C stops everything cleanly.
#
#   scripts/demo.sh          run until Ctrl-C
#   scripts/demo.sh --once   show the results and stop (a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
once=false
[[ "${1:-}" == "--once" ]] && once=true

./scripts/install-deps.sh
./scripts/build.sh crm-worker

state=/tmp/crm-worker-demo
mkdir -p "$state"
pg_dir=$state/pg
worker_pid=""

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid"
    wait "$worker_pid" || true
  fi
  "$root/scripts/pg.sh" stop "$pg_dir" >/dev/null 2>&1 || true
  echo "stopped; the worker's log is in $state/worker.log"
}
trap cleanup INT TERM EXIT

echo "== starting a throwaway PostgreSQL in $pg_dir"
"$root/scripts/pg.sh" start "$pg_dir" >/dev/null
psql "$(cat "$pg_dir/conninfo")" -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'crm'" | grep -q 1 ||
  psql "$(cat "$pg_dir/conninfo")" -q -c "CREATE DATABASE crm"
db_url=$("$root/scripts/pg.sh" url "$pg_dir" crm)

echo "== starting crm-worker run (embedded broker, metrics on 127.0.0.1:9464)"
rm -f "$state/bootstrap"
cat > "$state/crm-worker.toml" <<TOML
[kafka]
embedded_port_file = "$state/bootstrap"

[kafka.properties]
"fetch.wait.max.ms" = "10"
"statistics.interval.ms" = "1000"

[log]
format = "text"
TOML
CRM_WORKER_DATABASE_URL="$db_url" "$root/build/crm-worker" run --config "$state/crm-worker.toml" \
  >"$state/worker.log" 2>&1 &
worker_pid=$!

for _ in $(seq 1 150); do
  if curl -fs http://127.0.0.1:9464/readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    echo "crm-worker exited; its log:"; cat "$state/worker.log"; exit 1
  fi
  sleep 0.2
done
curl -fs http://127.0.0.1:9464/readyz >/dev/null || { echo "crm-worker did not become ready"; tail "$state/worker.log"; exit 1; }
bootstrap=$(cat "$state/bootstrap")
echo "   ready; embedded broker at $bootstrap"

echo "== publishing sample events to crm.outreach.events"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kcat -P -b "$bootstrap" -t crm.outreach.events -K '|' <<EVENTS
p-ada|{"specversion":"1.0","id":"demo-1","source":"demo","type":"crm.prospect.discovered","time":"$now","data":{"prospect_id":"p-ada","name":"Ada Lovelace","email":"ada@example.com","company":"Analytical Engines Ltd","source":"conference"}}
p-alan|{"specversion":"1.0","id":"demo-2","source":"demo","type":"crm.prospect.discovered","time":"$now","data":{"prospect_id":"p-alan","name":"Alan Turing","phone":"+44 20 7946 0000","company":"Bletchley Works"}}
p-ada|{"specversion":"1.0","id":"demo-1","source":"demo","type":"crm.prospect.discovered","time":"$now","data":{"prospect_id":"p-ada","name":"Ada Lovelace","email":"ada@example.com","company":"Analytical Engines Ltd","source":"conference"}}
p-grace|{"specversion":"1.0","id":"demo-3","source":"demo","type":"crm.prospect.discovered","time":"$now","data":{"prospect_id":"p-grace","name":"Grace Hopper","category":"navy","urgency":"high"}}
p-bad|this is not JSON
p-odd|{"specversion":"1.0","id":"demo-4","source":"demo","type":"crm.no.such.type","time":"$now","data":{}}
EVENTS
echo "   6 messages: 3 prospects, 1 duplicate, 2 that must become dead letters"

# An outreach journey, delivered in the worst order: Ada's reply first (it
# names only the email), then SendGrid's open (it names only SendGrid's
# message id), then the send itself; and a call booked with Alan.
later() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }
kcat -P -b "$bootstrap" -t crm.outreach.events -K '|' <<EVENTS
p-ada|{"specversion":"1.0","id":"demo-5","source":"demo","type":"crm.email.replied","time":"$(later '+3 hours')","data":{"email_id":"em-1","reply_text":"Yes, let's talk on Monday"}}
p-ada|{"specversion":"1.0","id":"demo-6","source":"demo","type":"crm.email.sent","time":"$now","data":{"email_id":"em-1","prospect_id":"p-ada","provider_message_id":"demo-msg-1","template":"intro","subject":"Engines"}}
p-alan|{"specversion":"1.0","id":"demo-7","source":"demo","type":"crm.call.scheduled","time":"$now","data":{"call_id":"call-1","prospect_id":"p-alan","scheduled_at":"$(later '+1 day')"}}
EVENTS
kcat -P -b "$bootstrap" -t sendgrid.events -K '|' <<EVENTS
demo-msg-1|[{"email":"ada@example.com","timestamp":$(date -u -d '+2 hours' +%s),"event":"open","sg_event_id":"demo-sg-1","sg_message_id":"demo-msg-1.filterdrecv-1"}]
EVENTS
echo "   4 more: a reply, a SendGrid open and the send they belong to (in that order), a call"

for _ in $(seq 1 50); do
  n=$(psql "$db_url" -qAt -c "SELECT (SELECT count(*) FROM processed_events) + (SELECT count(*) FROM dead_letters)")
  [[ "$n" -ge 9 ]] && break
  sleep 0.2
done

echo "== prospects"
psql "$db_url" -P pager=off -c "SELECT id, name, company, sales_status, email_status, lead_score, emails_opened_count AS opened, next_follow_up_at FROM prospects ORDER BY id"
echo "== email_activities"
psql "$db_url" -P pager=off -c "SELECT id, prospect_id, status, sent_at, opened_at, replied_at, reply_text FROM email_activities"
echo "== followups"
psql "$db_url" -P pager=off -c "SELECT id, kind, due_at, status, cancel_reason FROM followups ORDER BY id"
echo "== pipeline_stages"
psql "$db_url" -P pager=off -c "SELECT prospect_id, stage, stage_date, notes FROM pipeline_stages ORDER BY prospect_id, stage_date"
echo "== dead letters (crm-worker dlq list)"
CRM_WORKER_DATABASE_URL="$db_url" CRM_WORKER_LOG_FORMAT=text "$root/build/crm-worker" dlq list
echo "== /metrics (crm_worker_events_total, crm_worker_dead_letters_total)"
curl -fs http://127.0.0.1:9464/metrics | grep -E '^crm_worker_(events|dead_letters)_total'

if $once; then exit 0; fi
echo
echo "crm-worker is running. Try:"
echo "  kcat -P -b $bootstrap -t crm.outreach.events -K '|'    (then type key|json lines)"
echo "  psql '$db_url'"
echo "  curl http://127.0.0.1:9464/metrics"
echo "Press Ctrl-C to stop."
wait "$worker_pid"
