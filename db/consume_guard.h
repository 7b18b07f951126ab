#pragma once
// The consumer's crash guard: the consumer_inflight and consumer_suspects
// tables (migration 0007 says why they exist and what a row means). The
// consume loop records the offsets of a batch before decoding it,
// releases them in the transaction that applies them, and finds what a
// dead worker left when it is assigned a partition.
//
// Every function runs in the caller's transaction. record_inflight and
// begin_solo must commit before the messages they name are decoded
// (set_async_commit makes that commit cheap). Used on the consumer thread
// only. SQL is always parameterised.

#include <cstdint>
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace crm::db {

// Offsets [first, last] of one partition.
struct OffsetRange {
  std::string topic;
  int partition = 0;
  std::int64_t first = 0;
  std::int64_t last = 0;
};

// The transaction commits without waiting for its WAL to reach the disk.
void set_async_commit(pqxx::transaction_base& tx);

// Adds each range to `worker`'s own range of its partition (at most one
// range per partition). Returns the offsets in the ranges that are
// crashed_worker dead letters already (not replayed since): a redelivery
// of those must not be decoded again.
std::vector<OffsetRange> record_inflight(pqxx::transaction_base& tx, const std::string& group,
                                         const std::string& worker, const std::vector<OffsetRange>& ranges);

// The messages [first, last] of each partition are applied: every row (any
// worker's) that starts inside the range gives it up, and goes if nothing
// is left; the suspect rows of those offsets go.
void release_inflight(pqxx::transaction_base& tx, const std::string& group,
                      const std::vector<OffsetRange>& applied);

// The ranges left in these partitions, whoever recorded them. `first` of
// each argument is the lowest offset this worker has been delivered since
// the partition was assigned: everything below it is applied (committed
// offsets only pass applied messages), so rows are first trimmed to it.
std::vector<OffsetRange> unreleased(pqxx::transaction_base& tx, const std::string& group,
                                    const std::vector<OffsetRange>& delivered_from);

// `worker` gives these partitions up alive (revoked, or its drain ran out):
// its own ranges there go. Its suspect rows are forget_solo's business.
void drop_inflight(pqxx::transaction_base& tx, const std::string& group, const std::string& worker,
                   const std::vector<OffsetRange>& partitions);

// `worker` is about to apply `offset` on its own: its row is written, and
// the rows of other workers are the deaths so far.
struct SoloStart {
  int crashes = 0;              // other workers that began it and never finished
  bool crashed_before = false;  // a crashed_worker dead letter already (no row written)
};
SoloStart begin_solo(pqxx::transaction_base& tx, const std::string& group, const std::string& topic,
                     int partition, std::int64_t offset, const std::string& worker);

// `worker` gives the message up alive: its row goes.
void forget_solo(pqxx::transaction_base& tx, const std::string& group, const std::string& topic,
                 int partition, std::int64_t offset, const std::string& worker);

}  // namespace crm::db
