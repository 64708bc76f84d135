#include "open_registry.h"

#include <map>
#include <utility>

namespace ext4dio {
namespace {

std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>& Entries() {
  static auto* r = new std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>;
  return *r;
}

}  // namespace

// Constant-initialised: an open from a static constructor finds it ready.
ABSL_CONST_INIT Mutex OpenRegistry::mu_;

std::shared_ptr<File> OpenRegistry::Find(dev_t dev, ino_t ino) {
  auto it = Entries().find({dev, ino});
  if (it == Entries().end()) return nullptr;
  std::shared_ptr<File> f = it->second.lock();
  if (!f) Entries().erase(it);
  return f;
}

void OpenRegistry::Add(dev_t dev, ino_t ino, const std::shared_ptr<File>& file) {
  Entries()[{dev, ino}] = file;
}

}  // namespace ext4dio
