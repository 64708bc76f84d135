// libFuzzer target: an arbitrary byte string as an ext2/3/4 image.
//
// The input is written to a memfd and loaded through ext4dio::LoadMap by
// path ("/f") and by inode (12), exactly as a user would (image mode). A map
// that loads must be internally consistent: Query over the whole file gives
// contiguous segments, and every mapped/unwritten byte lies inside the image
// (a wrong physical block is the one thing this library must never return).
//
// Build: meson setup with -Dfuzz=true and clang (see test/fuzz/run.sh).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "errors.h"
#include "extent_map.h"
#include "map_loader.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_map: invariant violated: %s\n", what);
    std::abort();
  }
}

void Exercise(const std::string& image, uint64_t image_size,
              const ext4dio::Target& target) {
  absl::StatusOr<ext4dio::LoadedMap> loaded = ext4dio::LoadMap(target);
  if (!loaded.ok()) {
    // Every failure carries a C code: an errno or an EXT4DIO_E_* value.
    const int code = ext4dio::CodeOf(loaded.status());
    Check(code < 0, "a failed load has a negative code");
    Check(code != -EXT4DIO_E_INTERNAL, "no internal errors on hostile input");
    return;
  }
  const ext4dio::ExtentMap& map = loaded->map;
  const uint64_t bs = map.block_size();
  Check(bs >= 1024 && bs <= 65536 && (bs & (bs - 1)) == 0, "sane block size");
  for (size_t i = 0; i < map.extent_count(); ++i) {
    const ext4dio::Extent e = map.ExtentAt(i);
    Check(e.length > 0, "extent length > 0");
    Check(e.physical < image_size / bs &&
              e.length <= image_size / bs - e.physical,
          "extent inside the image");
  }
  const uint64_t size = map.file_size();
  if (size == 0) return;
  auto segments = map.Query(0, size);
  Check(segments.ok(), "Query(0, file_size) succeeds");
  uint64_t pos = 0;
  for (const ext4dio::Segment& s : *segments) {
    Check(s.offset == pos, "segments are contiguous");
    Check(s.length > 0, "segments are not empty");
    if (s.kind == ext4dio::SegmentKind::kMapped ||
        s.kind == ext4dio::SegmentKind::kUnwritten) {
      Check(s.device_offset <= image_size &&
                s.length <= image_size - s.device_offset,
            "mapped segment inside the image");
    }
    pos += s.length;
  }
  Check(pos == size, "segments cover the whole file");
  (void)image;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz_map", MFD_CLOEXEC);
  if (fd < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      std::perror("write memfd");
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  const std::string image = "/proc/self/fd/" + std::to_string(fd);

  ext4dio::Target by_path;
  by_path.image = image;
  by_path.path = "/f";
  Exercise(image, size, by_path);

  ext4dio::Target by_inode;
  by_inode.image = image;
  by_inode.inode = 12;
  Exercise(image, size, by_inode);

  ::close(fd);
  return 0;
}
