#include "db/consume_guard.h"

#include <boost/json.hpp>

namespace crm::db {
namespace {

namespace json = boost::json;

std::string ranges_json(const std::vector<OffsetRange>& ranges) {
  json::array a;
  for (const OffsetRange& r : ranges) {
    a.push_back(json::object{{"topic", r.topic}, {"partition", r.partition}, {"first", r.first}, {"last", r.last}});
  }
  return json::serialize(a);
}

}  // namespace

void set_async_commit(pqxx::transaction_base& tx) { tx.exec0("SET LOCAL synchronous_commit = off"); }

std::vector<OffsetRange> record_inflight(pqxx::transaction_base& tx, const std::string& group,
                                         const std::string& worker, const std::vector<OffsetRange>& ranges) {
  std::vector<OffsetRange> crashed;
  if (ranges.empty()) return crashed;
  constexpr const char* sql =
      "WITH r AS (SELECT * FROM"
      "   jsonb_to_recordset($2::jsonb) AS r(topic text, partition integer, first bigint, last bigint)),"
      " recorded AS ("
      "  INSERT INTO consumer_inflight AS c (group_id, topic, partition, worker, first_offset, last_offset)"
      "  SELECT $1, r.topic, r.partition, $3, r.first, r.last FROM r"
      "  ON CONFLICT (group_id, topic, partition, worker) DO UPDATE"
      "   SET first_offset = least(c.first_offset, excluded.first_offset),"
      "       last_offset = greatest(c.last_offset, excluded.last_offset),"
      "       updated_at = now())"
      " SELECT d.topic, d.partition, d.\"offset\" FROM dead_letters d JOIN r"
      "   ON d.topic = r.topic AND d.partition = r.partition AND d.\"offset\" BETWEEN r.first AND r.last"
      " WHERE d.reason = 'crashed_worker' AND d.replayed_at IS NULL";
  for (const auto& row : tx.exec_params(sql, group, ranges_json(ranges), worker)) {
    const auto offset = row[2].as<std::int64_t>();
    crashed.push_back({row[0].as<std::string>(), row[1].as<int>(), offset, offset});
  }
  return crashed;
}

void release_inflight(pqxx::transaction_base& tx, const std::string& group,
                      const std::vector<OffsetRange>& applied) {
  if (applied.empty()) return;
  // Three disjoint sets of rows: ranges applied to their end go, ranges
  // that go on past it keep the rest, and the counts of the messages go.
  constexpr const char* sql =
      "WITH r AS (SELECT * FROM"
      "   jsonb_to_recordset($2::jsonb) AS r(topic text, partition integer, first bigint, last bigint)),"
      " gone AS ("
      "  DELETE FROM consumer_inflight c USING r"
      "   WHERE c.group_id = $1 AND c.topic = r.topic AND c.partition = r.partition"
      "     AND c.first_offset BETWEEN r.first AND r.last AND c.last_offset <= r.last),"
      " cleared AS ("
      "  DELETE FROM consumer_suspects s USING r"
      "   WHERE s.group_id = $1 AND s.topic = r.topic AND s.partition = r.partition"
      "     AND s.\"offset\" BETWEEN r.first AND r.last)"
      " UPDATE consumer_inflight c SET first_offset = r.last + 1, updated_at = now()"
      "   FROM r"
      "  WHERE c.group_id = $1 AND c.topic = r.topic AND c.partition = r.partition"
      "    AND c.first_offset BETWEEN r.first AND r.last AND c.last_offset > r.last";
  tx.exec_params0(sql, group, ranges_json(applied));
}

std::vector<OffsetRange> unreleased(pqxx::transaction_base& tx, const std::string& group,
                                    const std::vector<OffsetRange>& delivered_from) {
  std::vector<OffsetRange> out;
  if (delivered_from.empty()) return out;
  // The final SELECT sees the rows as they were before the CTEs changed
  // them: the trimmed ones come from `trimmed`, the untouched ones from
  // the table, the deleted ones from neither.
  constexpr const char* sql =
      "WITH p AS (SELECT * FROM"
      "   jsonb_to_recordset($2::jsonb) AS p(topic text, partition integer, first bigint, last bigint)),"
      " trimmed AS ("
      "  UPDATE consumer_inflight c SET first_offset = p.first, updated_at = now() FROM p"
      "   WHERE c.group_id = $1 AND c.topic = p.topic AND c.partition = p.partition"
      "     AND c.first_offset < p.first AND c.last_offset >= p.first"
      "  RETURNING c.topic, c.partition, c.first_offset, c.last_offset),"
      " gone AS ("
      "  DELETE FROM consumer_inflight c USING p"
      "   WHERE c.group_id = $1 AND c.topic = p.topic AND c.partition = p.partition"
      "     AND c.last_offset < p.first),"
      " cleared AS ("
      "  DELETE FROM consumer_suspects s USING p"
      "   WHERE s.group_id = $1 AND s.topic = p.topic AND s.partition = p.partition"
      "     AND s.\"offset\" < p.first)"
      " SELECT topic, partition, first_offset, last_offset FROM trimmed"
      " UNION ALL"
      " SELECT c.topic, c.partition, c.first_offset, c.last_offset FROM consumer_inflight c JOIN p"
      "   ON c.topic = p.topic AND c.partition = p.partition"
      " WHERE c.group_id = $1 AND c.first_offset >= p.first"
      " ORDER BY 1, 2, 3";
  for (const auto& row : tx.exec_params(sql, group, ranges_json(delivered_from))) {
    out.push_back({row[0].as<std::string>(), row[1].as<int>(), row[2].as<std::int64_t>(),
                   row[3].as<std::int64_t>()});
  }
  return out;
}

void drop_inflight(pqxx::transaction_base& tx, const std::string& group, const std::string& worker,
                   const std::vector<OffsetRange>& partitions) {
  if (partitions.empty()) return;
  tx.exec_params0(
      "DELETE FROM consumer_inflight c"
      " USING jsonb_to_recordset($2::jsonb) AS p(topic text, partition integer, first bigint, last bigint)"
      " WHERE c.group_id = $1 AND c.worker = $3 AND c.topic = p.topic AND c.partition = p.partition",
      group, ranges_json(partitions), worker);
}

SoloStart begin_solo(pqxx::transaction_base& tx, const std::string& group, const std::string& topic,
                     int partition, std::int64_t offset, const std::string& worker) {
  pqxx::result r = tx.exec_params(
      "WITH dl AS ("
      "  SELECT count(*) AS n FROM dead_letters"
      "   WHERE topic = $2 AND partition = $3 AND \"offset\" = $4"
      "     AND reason = 'crashed_worker' AND replayed_at IS NULL),"
      " mine AS ("
      "  INSERT INTO consumer_suspects (group_id, topic, partition, \"offset\", worker)"
      "  SELECT $1, $2, $3, $4, $5 WHERE (SELECT n FROM dl) = 0"
      "  ON CONFLICT DO NOTHING)"
      " SELECT (SELECT n FROM dl),"
      "        (SELECT count(*) FROM consumer_suspects"
      "          WHERE group_id = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $4 AND worker <> $5)",
      group, topic, partition, offset, worker);
  SoloStart out;
  out.crashed_before = r.at(0).at(0).as<long long>() > 0;
  out.crashes = static_cast<int>(r.at(0).at(1).as<long long>());
  return out;
}

void forget_solo(pqxx::transaction_base& tx, const std::string& group, const std::string& topic,
                 int partition, std::int64_t offset, const std::string& worker) {
  tx.exec_params0(
      "DELETE FROM consumer_suspects"
      " WHERE group_id = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $4 AND worker = $5",
      group, topic, partition, offset, worker);
}

}  // namespace crm::db
