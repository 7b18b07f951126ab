#include "queue/dead_letter_producer.h"

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>

#include "daemon/logging.h"
#include "queue/kafka_consumer.h"

namespace crm::queue {

struct DeadLetterProducer::Impl {
  rd_kafka_t* rk = nullptr;
  std::string topic;
  std::atomic<int> failed{0};

  static void dr_cb(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      static_cast<Impl*>(opaque)->failed++;
      log::warn("dead letter not acknowledged", {{"error", rd_kafka_err2str(m->err)}});
    }
  }
};

DeadLetterProducer::DeadLetterProducer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DeadLetterProducer::~DeadLetterProducer() {
  if (impl_->rk != nullptr) {
    rd_kafka_flush(impl_->rk, 2000);
    rd_kafka_destroy(impl_->rk);
  }
}

Result<std::unique_ptr<DeadLetterProducer>> DeadLetterProducer::create(const Config& config,
                                                                       const std::string& bootstrap) {
  // Consumer-only properties in kafka.properties would make librdkafka warn
  // on a producer; the ones that matter for both (TLS, SASL) pass through.
  std::map<std::string, std::string> props;
  for (const auto& [k, v] : config.kafka.properties) {
    if (k.rfind("security.", 0) == 0 || k.rfind("ssl.", 0) == 0 || k.rfind("sasl.", 0) == 0 ||
        k == "client.id" || k == "socket.timeout.ms" || k == "broker.address.family") {
      props[k] = v;
    }
  }
  auto conf = make_rdkafka_conf({{"linger.ms", "5"}, {"message.timeout.ms", "30000"}}, props,
                                {{"bootstrap.servers", bootstrap},
                                 {"enable.idempotence", "true"},
                                 {"acks", "all"}});
  if (!conf) return conf.status();
  auto* c = static_cast<rd_kafka_conf_t*>(*conf);
  auto impl = std::make_unique<Impl>();
  impl->topic = config.kafka.topics.dead_letter;
  rd_kafka_conf_set_opaque(c, impl.get());
  rd_kafka_conf_set_dr_msg_cb(c, &Impl::dr_cb);
  char err[512];
  impl->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (impl->rk == nullptr) {
    rd_kafka_conf_destroy(c);
    return Status::permanent("kafka_client", std::string("cannot create producer: ") + err);
  }
  return std::unique_ptr<DeadLetterProducer>(new DeadLetterProducer(std::move(impl)));
}

Status DeadLetterProducer::publish(const std::vector<db::DeadLetter>& letters, Millis timeout) {
  if (letters.empty()) return Status::ok();
  impl_->failed = 0;
  for (const auto& dl : letters) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(8);
    auto add = [&](const char* name, const std::string& value) {
      rd_kafka_header_add(h, name, -1, value.data(), static_cast<ssize_t>(value.size()));
    };
    add("crm_dead_letter_id", dl.origin.id());
    add("crm_original_topic", dl.origin.topic);
    add("crm_original_partition", std::to_string(dl.origin.partition));
    add("crm_original_offset", std::to_string(dl.origin.offset));
    add("crm_original_element", std::to_string(dl.origin.element));
    add("crm_reason", dl.reason);
    add("crm_error", dl.error);
    const void* key = dl.key ? dl.key->data() : nullptr;
    size_t key_len = dl.key ? dl.key->size() : 0;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        impl_->rk, RD_KAFKA_V_TOPIC(impl_->topic.c_str()), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE(const_cast<char*>(dl.payload.data()), dl.payload.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(h);  // ownership passes only on success
      return Status::transient("dead_letter_produce", rd_kafka_err2str(err));
    }
  }
  rd_kafka_resp_err_t err = rd_kafka_flush(impl_->rk, static_cast<int>(timeout.count()));
  char fatal[512];
  if (rd_kafka_fatal_error(impl_->rk, fatal, sizeof fatal) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    // The idempotent producer cannot recover from this; every later send
    // would fail the same way.
    return Status::fatal("dead_letter_producer", fatal);
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::transient("dead_letter_produce", "dead-letter topic did not acknowledge in time");
  }
  if (impl_->failed > 0) {
    return Status::transient("dead_letter_produce", "dead-letter topic rejected a message");
  }
  return Status::ok();
}

}  // namespace crm::queue
