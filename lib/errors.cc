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

#include "absl/strings/str_cat.h"
#include "ext4dio/status.hpp"

namespace ext4dio {
namespace {

// The status for C API code `code`: its absl code and typed payload come
// from ext4dio/status.hpp, the table the C++ wrapper uses too.
// A code that is not negative (ErrnoError(0, ...) after a call that did not
// set errno) must still be an error: it becomes EXT4DIO_E_INTERNAL.
absl::Status WithCode(absl::string_view message, int code) {
  return StatusWithCode(code < 0 ? code : -EXT4DIO_E_INTERNAL, message);
}

}  // namespace

absl::Status LibError(ext4dio_error code, absl::string_view message) {
  return WithCode(message, -static_cast<int>(code));
}

absl::Status ErrnoError(int err, absl::string_view context) {
  return WithCode(absl::StrCat(context, ": ", std::strerror(err)), -err);
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

int CodeOf(const absl::Status& status) { return CodeFromStatus(status); }

bool IsAccessError(const absl::Status& status) {
  const int code = CodeOf(status);
  return code == -EACCES || code == -EPERM;
}

}  // namespace ext4dio
