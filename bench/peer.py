#!/usr/bin/python3
"""The peer of bench/run.sh compare: what a team writes when it has no
crm-worker. A plain consumer (Debian's python3-confluent-kafka) that
applies each event in its own PostgreSQL transaction (python3-psycopg2) and
commits its offset after it:

    poll -> BEGIN -> processed_events (a duplicate stops here)
         -> outreach_activities -> the entity's row (email, SMS, call,
            prospect, stage, customer...) -> the prospect's counters
         -> COMMIT -> commit the offset

It writes the rows crm-worker writes for the same events, the simple way:
each event patches the rows in place in arrival order (so, unlike
crm-worker, an out-of-order event can leave a stale value; the benchmark
measures speed, not that). Prints one line:

    peer: N events in S s: R events/s

Usage: peer.py --bootstrap HOST:PORT --dsn CONNINFO [--group G]
               [--seconds S] [--expect N]
Stops after S seconds of applying (default 60) or N distinct events.
"""

import argparse
import json
import sys
import time

import psycopg2
from confluent_kafka import Consumer, KafkaError

TOPICS = ["crm.outreach.events", "sendgrid.events", "crm.sync.jobs"]

SENDGRID_TYPES = {
    "processed": "crm.email.processed", "deferred": "crm.email.deferred",
    "delivered": "crm.email.delivered", "open": "crm.email.opened",
    "click": "crm.email.clicked", "bounce": "crm.email.bounced",
    "dropped": "crm.email.dropped", "spamreport": "crm.email.spam_reported",
    "unsubscribe": "crm.email.unsubscribed", "group_unsubscribe": "crm.email.unsubscribed",
}

# Email status order and the column each status stamps.
RANK = {"sent": 1, "delivered": 2, "opened": 3, "clicked": 4, "replied": 5, "bounced": 6}
STAMP = {
    "sent": "UPDATE email_activities SET sent_at = coalesce(sent_at, %s) WHERE id = %s",
    "delivered": "UPDATE email_activities SET delivered_at = coalesce(delivered_at, %s) WHERE id = %s",
    "opened": "UPDATE email_activities SET opened_at = coalesce(opened_at, %s) WHERE id = %s",
    "clicked": "UPDATE email_activities SET clicked_at = coalesce(clicked_at, %s),"
               " click_count = click_count + 1 WHERE id = %s",
    "replied": "UPDATE email_activities SET replied_at = coalesce(replied_at, %s) WHERE id = %s",
    "bounced": "UPDATE email_activities SET bounced_at = coalesce(bounced_at, %s) WHERE id = %s",
}
COUNT = {
    "sent": ("UPDATE prospects SET emails_sent_count = emails_sent_count + 1,"
             " last_contact_at = greatest(last_contact_at, %s) WHERE id = %s"),
    "opened": ("UPDATE prospects SET emails_opened_count = emails_opened_count + 1,"
               " lead_score = lead_score + 5 WHERE id = %s AND %s IS NOT NULL"),
    "clicked": ("UPDATE prospects SET emails_clicked_count = emails_clicked_count + 1,"
                " lead_score = lead_score + 10 WHERE id = %s AND %s IS NOT NULL"),
    "replied": ("UPDATE prospects SET emails_replied_count = emails_replied_count + 1,"
                " lead_score = lead_score + 30, email_status = 'replied' WHERE id = %s AND %s IS NOT NULL"),
}


def events_of(msg):
    """(id, type, time, data, prospect_id) for each event of a message."""
    try:
        body = json.loads(msg.value())
    except (ValueError, TypeError):
        return []
    if msg.topic() == "sendgrid.events":
        out = []
        for el in body if isinstance(body, list) else []:
            if not isinstance(el, dict) or "sg_event_id" not in el:
                continue
            kind = SENDGRID_TYPES.get(el.get("event"), "crm.email.unknown")
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(el.get("timestamp", 0))))
            data = {"email_id": el.get("email_id"), "prospect_id": el.get("prospect_id")}
            if el.get("reason"):
                data["reason"] = el["reason"]
            out.append((el["sg_event_id"], kind, ts, data, el.get("prospect_id")))
        return out
    if not isinstance(body, dict) or "id" not in body or "type" not in body:
        return []
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    return [(body["id"], body["type"], body.get("time"), data, data.get("prospect_id"))]


def apply_event(cur, msg, event):
    event_id, kind, ts, data, pid = event
    cur.execute(
        "INSERT INTO processed_events (event_id, topic, partition, \"offset\", event_type)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (event_id, msg.topic(), msg.partition(), msg.offset(), kind))
    if cur.rowcount == 0:
        return False  # a duplicate
    cur.execute(
        "INSERT INTO outreach_activities (event_id, prospect_id, type, occurred_at, details)"
        " VALUES (%s, %s, %s, %s, %s)",
        (event_id, pid, kind, ts, json.dumps(data)))
    if kind == "crm.prospect.discovered":
        cur.execute(
            "INSERT INTO prospects AS p (id, name, email, phone, company, source, profile_updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,"
            "  phone = excluded.phone, company = excluded.company, source = excluded.source,"
            "  profile_updated_at = excluded.profile_updated_at, updated_at = now()",
            (pid, data.get("name"), data.get("email"), data.get("phone"), data.get("company"),
             data.get("source"), ts))
        cur.execute(
            "INSERT INTO pipeline_stages (prospect_id, stage, stage_date) VALUES (%s, 'discovered', %s)"
            " ON CONFLICT DO NOTHING", (pid, ts))
    elif kind.startswith("crm.email."):
        status = kind[len("crm.email."):]
        email_id = data.get("email_id")
        if email_id:
            cur.execute(
                "INSERT INTO email_activities AS e (id, prospect_id, status, status_rank)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET prospect_id = coalesce(e.prospect_id, excluded.prospect_id),"
                "  status = CASE WHEN excluded.status_rank > e.status_rank THEN excluded.status ELSE e.status END,"
                "  status_rank = greatest(e.status_rank, excluded.status_rank), updated_at = now()",
                (email_id, pid, status if status in RANK else None, RANK.get(status, 0)))
            if status in STAMP:
                cur.execute(STAMP[status], (ts, email_id))
        if pid and status in COUNT:
            cur.execute(COUNT[status], (ts, pid) if status == "sent" else (pid, ts))
        if pid and status in ("bounced", "dropped", "spam_reported", "unsubscribed"):
            cur.execute(
                "UPDATE prospects SET email_suppressed_reason = coalesce(email_suppressed_reason, %s),"
                " email_suppressed_at = coalesce(email_suppressed_at, %s) WHERE id = %s",
                (status, ts, pid))
    elif kind.startswith("crm.sms."):
        sms_id = data.get("sms_id") or data.get("message_id") or event_id
        cur.execute(
            "INSERT INTO sms_activities AS s (id, prospect_id, status, status_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET status = coalesce(excluded.status, s.status),"
            "  status_at = excluded.status_at, updated_at = now()",
            (sms_id, pid, data.get("status") if kind == "crm.sms.status" else None, ts))
    elif kind.startswith("crm.call."):
        call_id = data.get("call_id") or event_id
        done = kind == "crm.call.completed"
        cur.execute(
            "INSERT INTO call_activities AS c (id, prospect_id, status, scheduled_at, completed_at)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            "  completed_at = coalesce(excluded.completed_at, c.completed_at), updated_at = now()",
            (call_id, pid, "completed" if done else "scheduled", None if done else ts, ts if done else None))
        if pid:
            cur.execute(
                "UPDATE prospects SET calls_completed_count = calls_completed_count + %s,"
                " calls_scheduled_count = calls_scheduled_count + %s WHERE id = %s",
                (1 if done else 0, 0 if done else 1, pid))
    elif kind == "crm.deal.stage_changed" and pid and data.get("stage"):
        cur.execute(
            "INSERT INTO pipeline_stages (prospect_id, stage, stage_date) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING", (pid, data["stage"], ts))
    elif kind == "crm.payment.completed" and pid:
        cur.execute(
            "INSERT INTO customers (id, prospect_id, amount, currency, first_payment_id)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            ("cust-" + pid, pid, data.get("amount"), data.get("currency"), event_id))
    if pid:
        cur.execute("UPDATE prospects SET updated_at = now() WHERE id = %s", (pid,))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--group", default="peer")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--expect", type=int, default=0)
    args = ap.parse_args()

    conn = psycopg2.connect(args.dsn)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe(TOPICS)
    applied = 0
    started = None
    idle_since = time.monotonic()
    try:
        while True:
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is None:
                if started is not None and now - idle_since > 5:
                    break  # nothing more to read
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print("peer: " + str(msg.error()), file=sys.stderr)
                continue
            idle_since = now
            for event in events_of(msg):
                with conn.cursor() as cur:
                    fresh = apply_event(cur, msg, event)
                conn.commit()
                if fresh:
                    applied += 1
                    if started is None:
                        started = time.monotonic()
            consumer.commit(message=msg, asynchronous=False)
            if started is not None and (time.monotonic() - started >= args.seconds or
                                        (args.expect and applied >= args.expect)):
                break
    finally:
        consumer.close()
        conn.close()
    secs = time.monotonic() - started if started else 0.0
    rate = applied / secs if secs > 0 else 0.0
    print("peer: %d events in %.2f s: %.0f events/s" % (applied, secs, rate))


if __name__ == "__main__":
    main()
