// Status propagation macros over absl::Status / absl::StatusOr. Canonical codes only:
// detail belongs in the message, never in new codes.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOADSTAR_CONCAT_INNER(a, b) a##b
#define LOADSTAR_CONCAT(a, b) LOADSTAR_CONCAT_INNER(a, b)

// Returns from the current function if `expr` yields a non-OK absl::Status.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status loadstar_status_ = (expr);          \
    if (!loadstar_status_.ok()) return loadstar_status_; \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns `lhs` from a StatusOr or returns
// its error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(LOADSTAR_CONCAT(loadstar_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                          \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()
