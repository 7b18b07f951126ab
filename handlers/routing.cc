#include "handlers/routing.h"

#include "handlers/hubspot.h"

namespace crm::handlers {
namespace {

using K = FieldKind;
using E = EntityType;

// The one list: SPEC.md §4's outreach, follow-up and sync types (HubSpot's
// changes included) with their data contracts, plus the SendGrid-only email
// types (processed, deferred, resubscribed), which are kept on the timeline
// and change nothing else. Adding an event type means adding its entry here
// and, if it has an effect, its rule in db/projections.cc.
const std::vector<Handler>& routes() {
  static const std::vector<Handler> kRoutes = {
      {"crm.prospect.discovered", E::kNone, "", true,
       {{"name", K::kString, true}, {"email"}, {"phone"}, {"company"}, {"source"}, {"category"},
        {"urgency"}, {"time_zone"}}},

      {"crm.email.sent", E::kEmail, "email_id", true,
       {{"provider_message_id"}, {"template"}, {"subject", K::kText}, {"sequence_step", K::kCount}}},
      {"crm.email.processed", E::kEmail, "email_id", false, {}},
      {"crm.email.deferred", E::kEmail, "email_id", false, {}},
      {"crm.email.delivered", E::kEmail, "email_id", false, {}},
      {"crm.email.opened", E::kEmail, "email_id", false, {{"machine_open", K::kBool}}},
      {"crm.email.clicked", E::kEmail, "email_id", false, {{"url", K::kText}}},
      {"crm.email.replied", E::kEmail, "email_id", false, {{"reply_text", K::kText}}},
      {"crm.email.bounced", E::kEmail, "email_id", false, {{"reason", K::kText}}},
      {"crm.email.dropped", E::kEmail, "email_id", false, {{"reason", K::kText}}},
      {"crm.email.unsubscribed", E::kEmail, "email_id", false, {}},
      {"crm.email.spam_reported", E::kEmail, "email_id", false, {}},
      {"crm.email.resubscribed", E::kEmail, "email_id", false, {}},

      {"crm.sms.status", E::kSms, "sms_id", true,
       {{"status", K::kString, true, {"queued", "sent", "delivered", "undelivered", "failed"}}}},
      {"crm.sms.replied", E::kSms, "sms_id", true, {{"body", K::kText, true}}},

      {"crm.call.scheduled", E::kCall, "call_id", true, {{"scheduled_at", K::kTime, true}}},
      {"crm.call.completed", E::kCall, "call_id", true,
       {{"completed_at", K::kTime, true},
        {"duration_s", K::kCount},
        {"notes", K::kText},
        {"objections", K::kStringArray},
        {"next_steps", K::kText},
        {"outcome"}}},

      {"crm.deal.stage_changed", E::kDeal, "deal_id", false,
       {{"stage", K::kString, true}, {"amount", K::kAmount}}},

      {"crm.payment.completed", E::kCustomer, "prospect_id", true,
       {{"payment_id", K::kString, true},
        {"amount", K::kAmount, true},
        {"currency", K::kString, true},
        {"plan"}}},
      {"crm.subscription.cancelled", E::kCustomer, "prospect_id", true, {{"plan"}}},

      {"crm.followup.scheduled", E::kFollowup, "followup_id", true,
       {{"kind", K::kString, true, {"email", "call_reminder", "stale_deal"}},
        {"due_at", K::kTime, true},
        {"template"}}},
      {"crm.followup.cancelled", E::kFollowup, "followup_id", false, {{"reason", K::kText}}},

      // A HubSpot sync job for a row the web app wrote; the entity is named by
      // two fields, so it stays in the details (no timeline entity).
      {"crm.sync.requested", E::kNone, "", false,
       {{"entity_type", K::kString, true, {"company", "contact", "deal"}},
        {"entity_id", K::kString, true},
        {"operation", K::kString, true, {"upsert", "delete"}}}},

      // A property changed by someone in HubSpot. It names HubSpot's object,
      // not ours, and no prospect (check_hubspot_change: the entity is
      // "<object_type>:<object_id>"; deal amounts and close dates are checked
      // there because their contract depends on `property`). `value` absent,
      // null or empty: HubSpot cleared the property.
      {"hubspot.object.changed", E::kHubspot, "object_id", false,
       {{"object_type", K::kString, true, {"company", "contact", "deal"}},
        {"property", K::kString, true},
        {"value", K::kText},
        {"occurred_at", K::kTime, true}},
       check_hubspot_change},
  };
  return kRoutes;
}

}  // namespace

const Handler* find_handler(std::string_view type) {
  for (const Handler& h : routes()) {
    if (h.type == type) return &h;
  }
  return nullptr;
}

std::vector<std::string_view> routed_types() {
  std::vector<std::string_view> out;
  for (const Handler& h : routes()) out.push_back(h.type);
  return out;
}

}  // namespace crm::handlers
