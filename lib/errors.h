// Errors inside libext4dio: absl::Status values that also carry the C API's
// code (an errno or an EXT4DIO_E_* value), so the C layer can return exactly
// what went wrong and the message says where. The absl code and the code's
// payload come from ext4dio/status.hpp, shared with the C++ wrapper.
//
// Thread-safety: free functions, no shared state.
#ifndef EXT4DIO_LIB_ERRORS_H_
#define EXT4DIO_LIB_ERRORS_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "ext4dio/ext4dio.h"

namespace ext4dio {

// A status for library code `code` (EXT4DIO_E_*), with the absl code a caller
// should act on (e.g. kDataLoss for corrupt metadata).
absl::Status LibError(ext4dio_error code, absl::string_view message);

// A status for errno `err`, with `context` leading the message
// ("open /x: No such file or directory").
absl::Status ErrnoError(int err, absl::string_view context);

// A status for a libext2fs errcode_t (errno values pass through as errno).
// `fallback` is the library code used for ext2fs' own codes.
absl::Status Ext2fsError(long errcode, ext4dio_error fallback,
                         absl::string_view context);

// The C API code of a status: a negative errno or -EXT4DIO_E_*; 0 for OK.
int CodeOf(const absl::Status& status);

// Whether `status` is EACCES or EPERM (no permission, e.g. to read a device).
bool IsAccessError(const absl::Status& status);

// `status` with `prefix` put before its message, payloads (codes) kept.
absl::Status Prefixed(absl::string_view prefix, const absl::Status& status);

// Text of a libext2fs/com_err error code.
absl::string_view Ext2fsMessage(long errcode);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_ERRORS_H_
