// OpenRegistry: the mounted files this process has open, by (st_dev,
// st_ino). A second descriptor of a file would break our own write lease,
// so a second open of the same file shares the first one's File (File::Open
// decides whether the options allow it).
//
// Thread-safety: mu() serialises whole opens; Find and Add require it.
#ifndef EXT4DIO_LIB_OPEN_REGISTRY_H_
#define EXT4DIO_LIB_OPEN_REGISTRY_H_

#include <sys/types.h>

#include <memory>

#include "absl/base/thread_annotations.h"
#include "mutex.h"

namespace ext4dio {

class File;

class OpenRegistry {
 public:
  // Held for the whole of a mounted open: two opens of one file never both
  // make a File.
  static Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }
  // The live File open for (dev, ino), or nullptr (a dead entry is dropped).
  static std::shared_ptr<File> Find(dev_t dev, ino_t ino) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Add(dev_t dev, ino_t ino, const std::shared_ptr<File>& file)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

 private:
  static Mutex mu_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_OPEN_REGISTRY_H_
