// ext4dio/status.hpp — the one mapping between the C API's codes and
// absl::Status, used by the library itself (lib/errors.cc) and by the C++
// wrapper (ext4dio.hpp), so that a status means the same on both sides.
//
// A C API code is a negative errno or a negative EXT4DIO_E_* value.
//  * Its absl code: errnos by absl::ErrnoToStatusCode (absl's own table),
//    EXT4DIO_E_* by the table below. Nothing else decides it.
//  * The exact C code travels in the status as a typed payload under
//    kCodePayloadUrl: 4 bytes, the code as a little-endian int32. Only
//    CodeFromPayload reads it.
//  * A status without that payload (absl::InvalidArgumentError and the like)
//    gets the errno CodeFromStatus picks for its absl code.
//
// Header-only: no C++ type crosses the library's ABI.
#ifndef EXT4DIO_STATUS_HPP_
#define EXT4DIO_STATUS_HPP_

#include <cerrno>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "ext4dio/ext4dio.h"

namespace ext4dio {

inline constexpr absl::string_view kCodePayloadUrl = "ext4dio/code";

// The absl code a caller should act on for C API code `code` (negative);
// kOk for code >= 0.
inline absl::StatusCode StatusCodeFor(int code) {
  if (code >= 0) return absl::StatusCode::kOk;
  const int c = -code;
  if (c < EXT4DIO_E_NOT_EXT4) {
    const absl::StatusCode s = absl::ErrnoToStatusCode(c);
    return s == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : s;
  }
  switch (c) {
    case EXT4DIO_E_NOT_EXT4:
    case EXT4DIO_E_UNSUPPORTED_FILE:
    case EXT4DIO_E_UNSUPPORTED_FS:
    case EXT4DIO_E_NOT_IN_USE:
    case EXT4DIO_E_NEEDS_ALLOCATION:
    case EXT4DIO_E_WRITE_REFUSED:
      return absl::StatusCode::kFailedPrecondition;
    case EXT4DIO_E_IN_USE:
      return absl::StatusCode::kUnavailable;
    case EXT4DIO_E_CORRUPT_FS:
    case EXT4DIO_E_TRUNCATED:
    case EXT4DIO_E_CORRUPT_MAP:
      return absl::StatusCode::kDataLoss;
    case EXT4DIO_E_MAP_MISMATCH:
      return absl::StatusCode::kAborted;
    case EXT4DIO_E_INTERNAL:
      return absl::StatusCode::kInternal;
    default:
      return absl::StatusCode::kUnknown;
  }
}

// The payload for C API code `code`: its 4 little-endian bytes.
inline absl::Cord CodePayload(int code) {
  const uint32_t u = static_cast<uint32_t>(code);
  const char bytes[4] = {static_cast<char>(u & 0xff), static_cast<char>((u >> 8) & 0xff),
                         static_cast<char>((u >> 16) & 0xff), static_cast<char>(u >> 24)};
  return absl::Cord(absl::string_view(bytes, sizeof bytes));
}

// The C code carried by `status`, if it carries a well-formed one (4 bytes,
// negative).
inline absl::optional<int> CodeFromPayload(const absl::Status& status) {
  const absl::optional<absl::Cord> payload = status.GetPayload(kCodePayloadUrl);
  if (!payload || payload->size() != 4) return absl::nullopt;
  const std::string b(*payload);
  const uint32_t u = static_cast<uint32_t>(static_cast<unsigned char>(b[0])) |
                     static_cast<uint32_t>(static_cast<unsigned char>(b[1])) << 8 |
                     static_cast<uint32_t>(static_cast<unsigned char>(b[2])) << 16 |
                     static_cast<uint32_t>(static_cast<unsigned char>(b[3])) << 24;
  const int code = static_cast<int>(u);
  if (code >= 0) return absl::nullopt;
  return code;
}

// A status for C API code `code` (< 0) with `message`; OK for code >= 0.
inline absl::Status StatusWithCode(int code, absl::string_view message) {
  if (code >= 0) return absl::OkStatus();
  absl::Status status(StatusCodeFor(code), message);
  status.SetPayload(kCodePayloadUrl, CodePayload(code));
  return status;
}

// The C API code of `status`: its payload, or for a status made without
// one, the errno that stands for its absl code; 0 for OK.
inline int CodeFromStatus(const absl::Status& status) {
  if (status.ok()) return 0;
  if (absl::optional<int> code = CodeFromPayload(status)) return *code;
  switch (status.code()) {
    case absl::StatusCode::kCancelled: return -ECANCELED;
    case absl::StatusCode::kInvalidArgument: return -EINVAL;
    case absl::StatusCode::kDeadlineExceeded: return -ETIMEDOUT;
    case absl::StatusCode::kNotFound: return -ENOENT;
    case absl::StatusCode::kAlreadyExists: return -EEXIST;
    case absl::StatusCode::kPermissionDenied: return -EACCES;
    case absl::StatusCode::kResourceExhausted: return -ENOMEM;
    case absl::StatusCode::kOutOfRange: return -ERANGE;
    case absl::StatusCode::kUnimplemented: return -EOPNOTSUPP;
    case absl::StatusCode::kUnavailable: return -EAGAIN;
    case absl::StatusCode::kDataLoss: return -EXT4DIO_E_CORRUPT_MAP;
    default: return -EXT4DIO_E_INTERNAL;
  }
}

}  // namespace ext4dio

#endif  // EXT4DIO_STATUS_HPP_
