// OpenAI-shaped errors: every failed request gets {"error": {"message", "type", "param", "code"}} and the HTTP status
// that the official clients map to their exception types (400 BadRequestError, 401 AuthenticationError, 404
// NotFoundError, 413, 429 RateLimitError, 500 InternalServerError, 503).
#pragma once

#include <string>

namespace longhaul::server {

struct ApiError {
  int status = 400;                              // HTTP status
  std::string message;                           // one line naming the value and the limit
  std::string type = "invalid_request_error";    // OpenAI's error type
  std::string param;                             // the request field at fault ("" = none, sent as null)
  std::string code;                              // machine-readable code ("" = none, sent as null)
};

inline ApiError bad_request(std::string message, std::string param = "", std::string code = "") {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// The response body of an error.
std::string error_json(const ApiError& error);

}  // namespace longhaul::server
