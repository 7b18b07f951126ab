#pragma once
// Publishes dead letters to the dead-letter topic (kafka.topics.dead_letter):
// the original key and payload, with headers saying where it came from and
// why it failed (crm_dead_letter_id, crm_original_topic,
// crm_original_partition, crm_original_offset, crm_original_element,
// crm_reason, crm_error).
//
// The dead_letters row is committed first, in the batch's transaction; the
// offsets are stored only after publish() succeeded. A crash in between
// redelivers the message, finds the row, and publishes again: the topic is
// at-least-once, the table exactly-once.
//
// Used on the consumer thread.

#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/core/status.h"
#include "db/pg_stores.h"

namespace crm::queue {

class DeadLetterProducer {
 public:
  static Result<std::unique_ptr<DeadLetterProducer>> create(const Config& config,
                                                            const std::string& bootstrap);
  ~DeadLetterProducer();

  // Produces every record and waits for all acknowledgements, at most
  // `timeout`. kTransient if any was not acknowledged.
  Status publish(const std::vector<db::DeadLetter>& letters, Millis timeout);

 private:
  struct Impl;
  explicit DeadLetterProducer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crm::queue
