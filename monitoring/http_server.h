#pragma once
// The operations endpoint on http.listen: GET /metrics (Prometheus text),
// /healthz (the process is alive), /readyz (database reachable and a Kafka
// assignment received; 503 with the reason otherwise). Served by civetweb's
// own threads; readiness is read through a callback that must be
// thread-safe.

#include <functional>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "daemon/core/status.h"

namespace crm::monitoring {

class HttpServer {
 public:
  // Returns "" when ready, else why not.
  using ReadinessCheck = std::function<std::string()>;

  static Result<std::unique_ptr<HttpServer>> start(const std::string& listen,
                                                   std::shared_ptr<prometheus::Registry> registry,
                                                   ReadinessCheck readiness);
  ~HttpServer();
  // The port actually bound (useful with port 0 in tests).
  int port() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crm::monitoring
