-- 0009_cancellation_index: the cancellation rule of 0003 reads only the
-- events that can cancel, through an index of those alone.
--
-- crm_followup_cancellation runs once per follow-up: in the executor's
-- claim, and for every pending follow-up of the prospects a batch gives an
-- event the rule reads (hundreds per batch). Through the prospect index it
-- fetched every event of the prospect (opens, clicks, deliveries: most of
-- them) to keep the few the rule can pick. The rule is unchanged; its
-- prospect branch now names the types it reads, so the planner can use
-- this partial index, which holds those events only.
CREATE INDEX outreach_activities_cancelling_idx
  ON outreach_activities (prospect_id, occurred_at)
  WHERE type IN ('crm.email.bounced', 'crm.email.dropped', 'crm.email.unsubscribed',
                 'crm.email.spam_reported', 'crm.email.replied', 'crm.sms.replied',
                 'crm.call.completed', 'crm.payment.completed', 'crm.deal.stage_changed');

CREATE OR REPLACE FUNCTION crm_followup_cancellation(
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
     OR (o.prospect_id = p_prospect
         -- Every type a case below names (the index's list).
         AND o.type IN ('crm.email.bounced', 'crm.email.dropped', 'crm.email.unsubscribed',
                        'crm.email.spam_reported', 'crm.email.replied', 'crm.sms.replied',
                        'crm.call.completed', 'crm.payment.completed', 'crm.deal.stage_changed')
         AND (
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
