// MapState: a file's map and the physical ranges it allows writing,
// replaced as a whole (mounted mode: after kernel-path changes) and read
// without a lock through an atomic pointer (File::cur()).
#ifndef EXT4DIO_LIB_MAP_STATE_H_
#define EXT4DIO_LIB_MAP_STATE_H_

#include "map_loader.h"
#include "planner.h"
#include "ranges.h"

namespace ext4dio {

struct MapState {
  LoadedMap loaded;
  WrittenSet written;
  // Mounted mode: file ranges whose pages the page cache kept after a drop
  // (pinned by a pipe, an mmap...): written through the kernel only, so the
  // cached copy and the device agree (page_cache.h).
  RangeList kernel_only;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_MAP_STATE_H_
