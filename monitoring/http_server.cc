#include "monitoring/http_server.h"

#include <CivetServer.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace crm::monitoring {
namespace {

void reply(mg_connection* conn, int status, const char* content_type, const std::string& body) {
  const char* text = status == 200 ? "OK" : status == 503 ? "Service Unavailable" : "Not Found";
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            status, text, content_type, body.size());
  mg_write(conn, body.data(), body.size());
}

class MetricsHandler : public CivetHandler {
 public:
  explicit MetricsHandler(std::shared_ptr<prometheus::Registry> r) : registry_(std::move(r)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    prometheus::TextSerializer serializer;
    std::string body = serializer.Serialize(registry_->Collect());
    reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body);
    return true;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
};

class HealthHandler : public CivetHandler {
 public:
  bool handleGet(CivetServer*, mg_connection* conn) override {
    reply(conn, 200, "text/plain", "ok\n");
    return true;
  }
};

class ReadyHandler : public CivetHandler {
 public:
  explicit ReadyHandler(HttpServer::ReadinessCheck c) : check_(std::move(c)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    std::string why = check_();
    if (why.empty()) {
      reply(conn, 200, "text/plain", "ready\n");
    } else {
      reply(conn, 503, "text/plain", "not ready: " + why + "\n");
    }
    return true;
  }

 private:
  HttpServer::ReadinessCheck check_;
};

// civetweb wants "127.0.0.1:9464" as is and IPv6 as "[::1]:9464"; both are
// what the configuration holds, so pass through.
}  // namespace

struct HttpServer::Impl {
  std::unique_ptr<CivetServer> server;
  MetricsHandler metrics;
  HealthHandler health;
  ReadyHandler ready;
  Impl(std::shared_ptr<prometheus::Registry> r, ReadinessCheck c)
      : metrics(std::move(r)), ready(std::move(c)) {}
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  if (impl_->server) impl_->server->close();
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& listen,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      ReadinessCheck readiness) {
  auto impl = std::make_unique<Impl>(std::move(registry), std::move(readiness));
  std::vector<std::string> options = {"listening_ports", listen, "num_threads", "2",
                                      "request_timeout_ms", "5000"};
  try {
    impl->server = std::make_unique<CivetServer>(options);
  } catch (const std::exception& e) {
    return Status::fatal("http_listen", "cannot listen on " + listen + ": " + e.what());
  }
  if (impl->server->getContext() == nullptr) {
    return Status::fatal("http_listen", "cannot listen on " + listen);
  }
  impl->server->addHandler("/metrics", impl->metrics);
  impl->server->addHandler("/healthz", impl->health);
  impl->server->addHandler("/readyz", impl->ready);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const {
  std::vector<int> ports = impl_->server->getListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace crm::monitoring
