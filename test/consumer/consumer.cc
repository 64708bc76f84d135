// A consumer of the installed C++ wrapper: `pkg-config ext4dio-cpp`.
#include <ext4dio/ext4dio.hpp>
#include <iostream>
int main() {
  auto m = ext4dio::FileMap::Load(ext4dio::Location::InImage("/nonexistent.img", "/f"));
  std::cout << m.status() << "\n";
  return !m.ok() && absl::IsNotFound(m.status()) ? 0 : 1;
}
