#include "db/database.h"

#include <libpq-fe.h>

#include <algorithm>
#include <map>
#include <utility>
#include <string_view>

#include "daemon/logging.h"

namespace crm::db {
namespace {

bool transient_sqlstate(const std::string& state) {
  if (state.size() != 5) return false;
  std::string_view cls(state.data(), 2);
  return cls == "08"          // connection exception
         || cls == "53"       // insufficient resources (too many connections, disk full)
         || cls == "57"       // operator intervention (admin shutdown, cannot connect now)
         || cls == "40"       // transaction rollback: serialization failure, deadlock
         || state == "25006"  // read-only SQL transaction (database in recovery / read only)
         || state == "55P03"; // lock not available
}

}  // namespace

Status classify_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const pqxx::in_doubt_error& ex) {
    return Status::transient("commit_in_doubt", ex.what());
  } catch (const pqxx::broken_connection& ex) {
    return Status::transient("db_unavailable", ex.what());
  } catch (const pqxx::transaction_rollback& ex) {
    return Status::transient("db_conflict", ex.what());
  } catch (const pqxx::sql_error& ex) {
    if (transient_sqlstate(ex.sqlstate())) {
      return Status::transient("db_unavailable", ex.what());
    }
    return Status::permanent("db_rejected", std::string("SQLSTATE ") + ex.sqlstate() + ": " + ex.what());
  } catch (const pqxx::usage_error& ex) {
    return Status::fatal("db_usage", ex.what());
  } catch (const pqxx::failure& ex) {
    // Other libpqxx failures are almost always about the connection.
    return Status::transient("db_unavailable", ex.what());
  } catch (const std::bad_alloc&) {
    return Status::fatal("out_of_memory", "out of memory");
  } catch (const std::exception& ex) {
    return Status::permanent("internal", ex.what());
  } catch (...) {
    return Status::permanent("internal", "unknown exception");
  }
}

class Database::Receiver : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& conn, const std::string& channel, bool* flag)
      : pqxx::notification_receiver(conn, channel), flag_(flag) {}
  void operator()(const std::string&, int) override { *flag_ = true; }

 private:
  bool* flag_;
};

Database::Database(std::string conninfo) : conninfo_(std::move(conninfo)) {}

Database::~Database() { disconnect(); }

void Database::listen(std::string channel) { channels_.push_back(std::move(channel)); }

bool Database::await_notification(std::chrono::milliseconds timeout) {
  if (!notified_) {
    auto c = connection();
    if (!c) return true;
    try {
      const auto us = std::max<long long>(timeout.count(), 0) * 1000;
      (*c)->await_notification(static_cast<long>(us / 1000000), static_cast<long>(us % 1000000));
    } catch (...) {
      disconnect();
      return true;
    }
    if (!(*c)->is_open()) {
      disconnect();
      return true;
    }
  }
  return std::exchange(notified_, false);
}

Result<pqxx::connection*> Database::connection() {
  if (conn_ && conn_->is_open()) return conn_.get();
  disconnect();
  try {
    conn_ = std::make_unique<pqxx::connection>(conninfo_);
    // Bound every wait on the server side too: a lock held by the web app
    // or a runaway statement must not stall the consume loop past
    // max.poll.interval.ms. Both errors are transient (SQLSTATE 57014,
    // 55P03): the batch is retried.
    pqxx::nontransaction tx(*conn_);
    tx.exec0("SET statement_timeout = '60s'");
    tx.exec0("SET lock_timeout = '30s'");
    tx.exec0("SET idle_in_transaction_session_timeout = '5min'");
    // JIT compiles a plan in ~100 ms once its estimated cost passes
    // jit_above_cost, which our set-based recomputations easily do while
    // running in a few ms: measured 222 ms with JIT against 12 ms without
    // for one batch's follow-up re-check.
    tx.exec0("SET jit = off");
    tx.commit();
    for (const std::string& channel : channels_) {
      receivers_.push_back(std::make_unique<Receiver>(*conn_, channel, &notified_));
    }
    // Anything sent while we were not listening was missed: look again.
    if (!channels_.empty()) notified_ = true;
    reachable_.store(true);
    return conn_.get();
  } catch (...) {
    reachable_.store(false);
    return classify_exception(std::current_exception());
  }
}

void Database::disconnect() {
  receivers_.clear();
  conn_.reset();
}

Status Database::transact(const std::function<Status(pqxx::work&)>& body) {
  auto c = connection();
  if (!c) return c.status();
  try {
    pqxx::work tx(**c);
    Status s = body(tx);
    if (!s) {
      tx.abort();
      if (s.is_transient()) disconnect();
      return s;
    }
    tx.commit();
    reachable_.store(true);
    return Status::ok();
  } catch (...) {
    Status s = classify_exception(std::current_exception());
    if (s.is_transient()) {
      // A conflict (serialization, deadlock) says nothing about reachability.
      if (s.reason() != "db_conflict") reachable_.store(false);
      disconnect();
    }
    return s;
  }
}

Result<std::string> build_conninfo(const std::string& url, int connect_timeout_seconds) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (opts == nullptr) {
    if (err != nullptr) PQfreemem(err);  // may quote the password: not shown
    return Status::permanent("bad_database_url",
                             "database.url is not a valid PostgreSQL URL or connection string "
                             "(the value is not shown: it may hold a password)");
  }
  std::map<std::string, std::string> values;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) values[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  const std::map<std::string, std::string> defaults = {
      {"connect_timeout", std::to_string(std::max(connect_timeout_seconds, 1))},
      {"keepalives", "1"},
      {"keepalives_idle", "30"},
      {"keepalives_interval", "10"},
      {"keepalives_count", "3"},
      {"tcp_user_timeout", "60000"},
      {"application_name", "crm-worker"},
  };
  for (const auto& [k, v] : defaults) values.emplace(k, v);
  std::string out;
  for (const auto& [k, v] : values) {
    if (!out.empty()) out.push_back(' ');
    out += k + "='";
    for (char c : v) {
      if (c == '\\' || c == '\'') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('\'');
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

std::string from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) break;
    out.push_back(static_cast<char>(hi << 4 | lo));
  }
  return out;
}

}  // namespace crm::db
