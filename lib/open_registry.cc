#include "open_registry.h"

#include <map>
#include <utility>

namespace ext4dio {
namespace {

std::mutex& Mu() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>& Entries() {
  static auto* r = new std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>;
  return *r;
}

}  // namespace

std::unique_lock<std::mutex> OpenRegistry::Lock() { return std::unique_lock<std::mutex>(Mu()); }

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
