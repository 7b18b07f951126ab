-- 0003_followup_executor: durable timers that fire once, on time, and that a
-- reply cancels (daemon/followup_executor.h), and the Slack outbox's
-- shared rate limit (daemon/notifier.h).

-- The prospect's IANA time zone (crm.prospect.discovered `time_zone`): email
-- follow-ups are sent inside the send window of the prospect's local time.
ALTER TABLE prospects ADD COLUMN time_zone text;

-- deal_id: the deal a stale-deal alert watches ("<deal>:stale").
-- claimed_at: when an executor took the row (database clock).
ALTER TABLE followups
  ADD COLUMN deal_id     text,
  ADD COLUMN claimed_at  timestamptz;

-- Due timers in firing order: the claim and the "when is the next one"
-- question are both an index scan, however many timers wait.
CREATE INDEX followups_due_idx ON followups ((COALESCE(next_attempt_at, due_at)), id)
  WHERE status = 'scheduled';
-- Rows an executor took and did not finish.
CREATE INDEX followups_sending_idx ON followups (lease_expires_at) WHERE status = 'sending';
CREATE INDEX followups_deal_idx ON followups (deal_id) WHERE deal_id IS NOT NULL;
-- A prospect's next pending timer (crm_next_follow_up), without reading its
-- history.
CREATE INDEX followups_prospect_due_idx ON followups (prospect_id, (COALESCE(next_attempt_at, due_at)))
  WHERE status = 'scheduled';

-- Wakes the executors (LISTEN crm_followups) when a timer is created or
-- moved, by us or by any other writer, so an earlier due time is noticed at
-- once without polling. Notifications are delivered at commit and folded
-- per transaction.
CREATE FUNCTION crm_followups_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('crm_followups', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER followups_notify
  AFTER INSERT OR UPDATE OF status, due_at, next_attempt_at ON followups
  FOR EACH ROW WHEN (NEW.status = 'scheduled')
  EXECUTE FUNCTION crm_followups_notify();

-- The one cancellation rule, used when an event is applied (every pending
-- row of the touched prospects is re-evaluated) and again inside the claim
-- that fires a timer. Returns the EARLIEST event on the timeline that
-- cancels the row, or nothing:
--   * its own crm.followup.cancelled, at any time;
--   * email rows: a bounce, drop, unsubscribe or spam report, at any time
--     (suppression is forever);
--   * email rows and explicit stale-deal rows: a reply (email or SMS) at or
--     after the row's source time, or a reply to the email it follows up;
--   * call reminders: the completion of their call;
--   * stale-deal alerts of a deal: that deal's close or a payment, at any time;
--   * other rows: a close or payment at or after their source time.
-- A set-returning SQL function with one SELECT: PostgreSQL inlines it.
CREATE FUNCTION crm_followup_cancellation(
    p_id text, p_prospect text, p_kind text, p_email text, p_call text, p_deal text,
    p_source timestamptz)
  RETURNS TABLE (event_id text, occurred_at timestamptz, reason text)
  LANGUAGE sql STABLE AS $$
  SELECT o.event_id, o.occurred_at,
    CASE o.type
      WHEN 'crm.followup.cancelled' THEN 'cancelled'
      WHEN 'crm.email.replied' THEN 'replied' WHEN 'crm.sms.replied' THEN 'replied'
      WHEN 'crm.email.bounced' THEN 'bounced' WHEN 'crm.email.dropped' THEN 'dropped'
      WHEN 'crm.email.unsubscribed' THEN 'unsubscribed'
      WHEN 'crm.email.spam_reported' THEN 'spam_reported'
      WHEN 'crm.call.completed' THEN 'call_completed'
      WHEN 'crm.payment.completed' THEN 'closed_won'
      ELSE o.details->>'stage' END
  FROM outreach_activities o
  WHERE (o.type = 'crm.followup.cancelled' AND o.entity_type = 'followup' AND o.entity_id = p_id)
     OR (o.prospect_id = p_prospect AND (
          (p_kind = 'email'
           AND o.type IN ('crm.email.bounced', 'crm.email.dropped', 'crm.email.unsubscribed',
                          'crm.email.spam_reported'))
       OR ((p_kind = 'email' OR (p_kind = 'stale_deal' AND p_deal IS NULL))
           AND o.type IN ('crm.email.replied', 'crm.sms.replied')
           AND (p_source IS NULL OR o.occurred_at >= p_source
                OR (o.entity_type = 'email' AND o.entity_id = p_email)))
       OR (p_kind = 'call_reminder' AND o.type = 'crm.call.completed'
           AND o.entity_type = 'call' AND o.entity_id = p_call)
       OR (p_deal IS NOT NULL
           AND (o.type = 'crm.payment.completed'
                OR (o.type = 'crm.deal.stage_changed' AND o.entity_id = p_deal
                    AND o.details->>'stage' IN ('closed_won', 'closed_lost'))))
       OR (p_deal IS NULL
           AND (o.type = 'crm.payment.completed'
                OR (o.type = 'crm.deal.stage_changed'
                    AND o.details->>'stage' IN ('closed_won', 'closed_lost')))
           AND (p_source IS NULL OR o.occurred_at >= p_source))))
  ORDER BY o.occurred_at, o.event_id
  LIMIT 1
$$;

-- A prospect's next follow-up: the earliest pending timer (call reminders
-- aside: the call itself counts) or scheduled call.
CREATE FUNCTION crm_next_follow_up(p_prospect text) RETURNS timestamptz
  LANGUAGE sql STABLE AS $$
  SELECT LEAST(
    (SELECT COALESCE(f.next_attempt_at, f.due_at) FROM followups f
      WHERE f.prospect_id = p_prospect AND f.status = 'scheduled' AND f.kind <> 'call_reminder'
      ORDER BY COALESCE(f.next_attempt_at, f.due_at) LIMIT 1),
    (SELECT min(c.scheduled_at) FROM call_activities c
      WHERE c.prospect_id = p_prospect AND c.status = 'scheduled'))
$$;

-- The send window: the first moment at or after `t` that lies inside
-- [start_min, end_min) minutes of a local day in `zone` (the prospect's),
-- skipping Saturdays and Sundays unless `weekends`. A zone that is not an
-- IANA name PostgreSQL knows falls back to `fallback`
-- (followups.default_time_zone, checked at start). A local start time that does not exist (a DST gap) is
-- resolved the way PostgreSQL resolves it: shifted forward.
CREATE FUNCTION crm_send_window_start(t timestamptz, zone text, fallback text,
                                      start_min int, end_min int, weekends boolean)
  RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
  -- Only IANA names ("Area/Location", "UTC"): PostgreSQL would also take
  -- "+03:00" as a POSIX offset with the sign inverted.
  z text := CASE WHEN zone ~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$' THEN zone
                 ELSE fallback END;
  local_t timestamp;
  d date;
BEGIN
  IF start_min <= 0 AND end_min >= 1440 AND weekends THEN
    RETURN t;
  END IF;
  BEGIN
    local_t := t AT TIME ZONE z;
  EXCEPTION WHEN invalid_parameter_value THEN
    z := fallback;
    local_t := t AT TIME ZONE z;
  END;
  FOR i IN 0..7 LOOP
    d := local_t::date + i;
    IF weekends OR extract(isodow FROM d) < 6 THEN
      IF i > 0 OR local_t < d + make_interval(mins => start_min) THEN
        RETURN (d + make_interval(mins => start_min)) AT TIME ZONE z;
      END IF;
      IF local_t < d + make_interval(mins => end_min) THEN
        RETURN t;
      END IF;
    END IF;
  END LOOP;
  RETURN t;
END
$$;

-- Shared rate limits of external APIs across every instance: a request may
-- go when it moves next_at forward from the past (one row per API).
CREATE TABLE api_slots (
  api      text PRIMARY KEY,
  next_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO api_slots (api) VALUES ('slack'), ('sendgrid');
