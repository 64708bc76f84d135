// Alignment arithmetic and aligned heap buffers for direct I/O.
#ifndef EXT4DIO_LIB_ALIGNED_H_
#define EXT4DIO_LIB_ALIGNED_H_

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace ext4dio {

inline uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
inline uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<char, FreeDeleter>;

// nullptr when out of memory.
inline AlignedBuf AllocAligned(size_t align, size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, std::max<size_t>(align, sizeof(void*)), std::max<size_t>(n, 1)) != 0)
    return nullptr;
  return AlignedBuf(static_cast<char*>(p));
}

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_ALIGNED_H_
