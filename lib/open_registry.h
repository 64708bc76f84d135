// OpenRegistry: the mounted files this process has open, by (st_dev,
// st_ino). A second descriptor of a file would break our own write lease,
// so a second open of the same file shares the first one's File (File::Open
// decides whether the options allow it).
//
// Thread-safety: Lock() serialises whole opens; Find and Add require it.
#ifndef EXT4DIO_LIB_OPEN_REGISTRY_H_
#define EXT4DIO_LIB_OPEN_REGISTRY_H_

#include <sys/types.h>

#include <memory>
#include <mutex>

namespace ext4dio {

class File;

class OpenRegistry {
 public:
  // Held for the whole of a mounted open: two opens of one file never both
  // make a File.
  [[nodiscard]] static std::unique_lock<std::mutex> Lock();
  // The live File open for (dev, ino), or nullptr (a dead entry is dropped).
  static std::shared_ptr<File> Find(dev_t dev, ino_t ino);
  static void Add(dev_t dev, ino_t ino, const std::shared_ptr<File>& file);
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_OPEN_REGISTRY_H_
