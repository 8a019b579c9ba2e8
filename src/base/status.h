// Status / Result<T>: how a function says it can fail (expected failures:
// I/O, malformed files, bad requests). Broken invariants abort via LH_CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace longhaul {

// A failure with a one-line message that names the value and the limit,
// e.g. "tensor 'blk.0.attn_q.weight': offset 123 + 4096 bytes past end of file (size 2048)".
class Status {
 public:
  Status() = default;  // ok
  static Status ok() { return Status(); }
  static Status error(std::string message) {
    Status s;
    s.message_ = std::move(message);
    s.failed_ = true;
    return s;
  }
  bool is_ok() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  std::string message_;
  bool failed_ = false;
};

// Either a value or a failed Status. g++ 12 has no std::expected, so this is ours.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) {
    if (status_.is_ok()) status_ = Status::error("Result constructed from an ok Status");
  }
  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }
  const std::string& message() const { return status_.message(); }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

inline Status to_status(const Status& s) { return s; }
template <typename T>
Status to_status(const Result<T>& r) { return r.status(); }

[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& extra);

}  // namespace longhaul

// Invariant checks: always on, abort with file:line. Not for user input.
#define LH_CHECK(cond)                                                       \
  do {                                                                       \
    if (!(cond)) ::longhaul::check_failed(__FILE__, __LINE__, #cond, "");    \
  } while (0)
#define LH_CHECK_MSG(cond, msg)                                              \
  do {                                                                       \
    if (!(cond)) ::longhaul::check_failed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

// Propagate a failed Status / Result from the current function.
#define LH_RETURN_IF_ERROR(expr)                                  \
  do {                                                            \
    auto lh_status_ = (expr);                                     \
    if (!lh_status_) return ::longhaul::to_status(lh_status_);    \
  } while (0)

#define LH_CONCAT_INNER(a, b) a##b
#define LH_CONCAT(a, b) LH_CONCAT_INNER(a, b)
// LH_ASSIGN_OR_RETURN(auto x, make_x()); returns the failed Status otherwise.
#define LH_ASSIGN_OR_RETURN(lhs, expr) LH_ASSIGN_OR_RETURN_IMPL(LH_CONCAT(lh_result_, __LINE__), lhs, expr)
#define LH_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp) return tmp.status();                 \
  lhs = std::move(tmp).value()
