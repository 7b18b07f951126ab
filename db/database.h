#pragma once
// The daemon's PostgreSQL connection: connects lazily, reconnects after a
// failure, and maps libpqxx exceptions to error kinds in one place.
//
// Owned and used by one thread (a libpqxx connection is not thread-safe):
// the consumer thread. Other threads learn the database's health through
// reachable(), which is a plain atomic flag.

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/core/status.h"

namespace crm::db {

// Maps an exception thrown by libpqxx (or anything else) to a Status.
//   broken_connection, SQLSTATE classes 08/53/57, read-only (25006),
//   serialization failure / deadlock (40001/40P01) → kTransient.
//   in_doubt_error → kTransient as well: the commit may or may not have
//     happened, and retrying is safe only because every write we make is
//     idempotent (processed_events, ON CONFLICT, monotonic updates). Keep it so.
//   Other SQL errors (constraint violations, bad data) → kPermanent.
Status classify_exception(std::exception_ptr e);

class Database {
 public:
  explicit Database(std::string conninfo);
  ~Database();

  // Runs `body` in one read-committed transaction and commits it if body
  // returns ok. Any exception is classified; a transient one drops the
  // connection so the next call reconnects.
  Status transact(const std::function<Status(pqxx::work&)>& body);

  // The live connection, connecting first if needed.
  Result<pqxx::connection*> connection();
  void disconnect();

  // LISTENs on `channel` on every connection this object makes (call before
  // the first use).
  void listen(std::string channel);
  // Waits until a notification on a listened channel arrives or `timeout`
  // passes. True if one came since the last call (also one that arrived
  // while a transaction ran, and after a reconnect, when some may have been
  // missed). A broken connection is dropped and reported as true, so the
  // caller looks at the database again (and reconnects).
  bool await_notification(std::chrono::milliseconds timeout);

  // What it connects with (another Database may connect alike).
  const std::string& conninfo() const { return conninfo_; }

  // Last known health, for /readyz. Set by every transact().
  bool reachable() const { return reachable_.load(); }

 private:
  class Receiver;
  std::string conninfo_;
  std::vector<std::string> channels_;
  // Declared after conn_: destroyed first (they UNLISTEN on it).
  std::unique_ptr<pqxx::connection> conn_;
  std::vector<std::unique_ptr<Receiver>> receivers_;
  bool notified_ = false;
  std::atomic<bool> reachable_{false};
};

// Turns database.url (a postgresql:// URL or a keyword string) into the
// keyword connection string the daemon uses, adding what the operator did
// not set: connect_timeout, TCP keepalives and a user timeout (so a
// vanished server is noticed in seconds, not minutes), and
// application_name. kPermanent if libpq cannot parse it; the message never
// repeats the value (libpq's own message may contain the password).
Result<std::string> build_conninfo(const std::string& url, int connect_timeout_seconds);

// Hex text of raw bytes ("\x" not included), for bytea parameters through
// decode($n, 'hex'): payloads may hold NUL or invalid UTF-8.
std::string to_hex(std::string_view bytes);
// The inverse; stops at the first character that is not a hex digit pair.
std::string from_hex(std::string_view hex);

}  // namespace crm::db
