#pragma once
// Errors as values. Every failure carries a kind that answers the only two
// questions a caller has: "may I retry?" and "must I stop?".
//
//   kTransient  retry the same work later (database down, serialization
//               failure, broker unreachable); never dead-letter, never
//               advance an offset.
//   kPermanent  this input will never succeed: dead-letter it and move on.
//   kFatal      the process cannot continue (fenced consumer, bad schema):
//               drain, exit non-zero, let systemd restart it.
//
// `reason` is a short stable token (a metric label / dead-letter reason such
// as "not_json" or "missing_field"); `message` is for humans and must never
// contain a secret.

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace crm {

enum class ErrorKind { kTransient, kPermanent, kFatal };

const char* to_string(ErrorKind kind);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  static Status ok() { return {}; }
  static Status transient(std::string reason, std::string message) {
    return Status(ErrorKind::kTransient, std::move(reason), std::move(message));
  }
  static Status permanent(std::string reason, std::string message) {
    return Status(ErrorKind::kPermanent, std::move(reason), std::move(message));
  }
  static Status fatal(std::string reason, std::string message) {
    return Status(ErrorKind::kFatal, std::move(reason), std::move(message));
  }

  bool is_ok() const { return !kind_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  ErrorKind kind() const { return *kind_; }
  bool is_transient() const { return kind_ == ErrorKind::kTransient; }
  bool is_permanent() const { return kind_ == ErrorKind::kPermanent; }
  bool is_fatal() const { return kind_ == ErrorKind::kFatal; }
  const std::string& reason() const { return reason_; }
  const std::string& message() const { return message_; }

 private:
  Status(ErrorKind kind, std::string reason, std::string message)
      : kind_(kind), reason_(std::move(reason)), message_(std::move(message)) {}

  std::optional<ErrorKind> kind_;
  std::string reason_;
  std::string message_;
};

// A value or the Status that explains its absence.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  T& operator*() & { return std::get<T>(v_); }
  const T& operator*() const& { return std::get<T>(v_); }
  const Status& status() const { return std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace crm
