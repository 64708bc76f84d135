#include "errors.h"

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

// com_err's headers have no extern "C" of their own.
extern "C" {
#include <et/com_err.h>
#include <ext2fs/ext2_err.h>
}

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ext4dio {
namespace {

constexpr absl::string_view kCodePayload = "ext4dio/code";

absl::StatusCode CanonicalFor(ext4dio_error code) {
  switch (code) {
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
  }
  return absl::StatusCode::kUnknown;
}

absl::StatusCode CanonicalForErrno(int err) {
  switch (err) {
    case ENOENT: case ENOTDIR: return absl::StatusCode::kNotFound;
    case EACCES: case EPERM: return absl::StatusCode::kPermissionDenied;
    case EINVAL: case EISDIR: case ENAMETOOLONG: case ELOOP:
      return absl::StatusCode::kInvalidArgument;
    case EAGAIN: case EBUSY: return absl::StatusCode::kUnavailable;
    case ENOSPC: case EDQUOT: return absl::StatusCode::kResourceExhausted;
    case ERANGE: case EFBIG: return absl::StatusCode::kOutOfRange;
    case EOPNOTSUPP: return absl::StatusCode::kUnimplemented;
    case EEXIST: return absl::StatusCode::kAlreadyExists;
    default: return absl::StatusCode::kUnknown;
  }
}

absl::Status WithCode(absl::StatusCode canonical, absl::string_view message,
                      int code) {
  absl::Status s(canonical, message);
  s.SetPayload(kCodePayload, absl::Cord(std::to_string(code)));
  return s;
}

}  // namespace

absl::Status LibError(ext4dio_error code, absl::string_view message) {
  return WithCode(CanonicalFor(code), message, -static_cast<int>(code));
}

absl::Status ErrnoError(int err, absl::string_view context) {
  return WithCode(CanonicalForErrno(err),
                  absl::StrCat(context, ": ", std::strerror(err)), -err);
}

absl::string_view Ext2fsMessage(long errcode) {
  static std::once_flag once;
  std::call_once(once, [] { initialize_ext2_error_table(); });
  return error_message(errcode);
}

absl::Status Ext2fsError(long errcode, ext4dio_error fallback,
                         absl::string_view context) {
  if (errcode > 0 && errcode < 4096) return ErrnoError(int(errcode), context);
  return LibError(fallback, absl::StrCat(context, ": ", Ext2fsMessage(errcode)));
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& status) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload([&out](absl::string_view key, const absl::Cord& value) {
    out.SetPayload(key, value);
  });
  return out;
}

int CodeOf(const absl::Status& status) {
  if (status.ok()) return 0;
  if (auto payload = status.GetPayload(kCodePayload)) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*payload), &code) && code < 0) return code;
  }
  switch (status.code()) {
    case absl::StatusCode::kNotFound: return -ENOENT;
    case absl::StatusCode::kPermissionDenied: return -EACCES;
    case absl::StatusCode::kInvalidArgument: return -EINVAL;
    case absl::StatusCode::kOutOfRange: return -ERANGE;
    case absl::StatusCode::kResourceExhausted: return -ENOMEM;
    case absl::StatusCode::kUnavailable: return -EAGAIN;
    case absl::StatusCode::kUnimplemented: return -EOPNOTSUPP;
    case absl::StatusCode::kDataLoss: return -EXT4DIO_E_CORRUPT_MAP;
    default: return -EXT4DIO_E_INTERNAL;
  }
}

bool IsAccessError(const absl::Status& status) {
  const int code = CodeOf(status);
  return code == -EACCES || code == -EPERM;
}

}  // namespace ext4dio
