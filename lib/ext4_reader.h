// Ext4Reader: read-only access to an ext2/3/4 filesystem through libext2fs,
// producing a validated list of a file's on-disk extents.
//
// Thread-safety: libext2fs is not thread-safe (ext2fs_read_inode2 mutates
// its inode cache unlocked), so every method takes the reader's mutex. It is
// never used on the I/O hot path.
//
// Paranoia is the point: a wrong physical block means writing over somebody
// else's data. The walk is bounded (depth <= 5, extent and index-block counts
// bounded by i_blocks) and the result is checked against the filesystem's
// metadata before anyone may use it (see ReadFile).
#ifndef EXT4DIO_LIB_EXT4_READER_H_
#define EXT4DIO_LIB_EXT4_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "mutex.h"
#include "extent_map.h"

struct struct_ext2_filsys;

namespace ext4dio {

struct ReaderOptions {
  // Byte offset of the filesystem inside the image or device.
  uint64_t offset = 0;
  // The filesystem is mounted and live: metadata may change under us, so
  // checksum failures are retried (kChecksumRetries times) before reporting.
  bool live = false;
};

// What ReadFile returns: the file's on-disk leaf extents, as stored.
struct FileLayout {
  uint64_t inode = 0;
  uint64_t size = 0;          // i_size
  uint32_t block_size = 0;
  uint32_t cluster_size = 0;
  bool extent_tree = true;    // false: ext2/ext3 block map
  uint32_t depth = 0;         // extent tree depth (0 for block maps)
  uint32_t flags = 0;         // i_flags (EXT2_IMMUTABLE_FL, EXT2_APPEND_FL, ...)
  std::vector<Extent> extents;       // logical order; block maps: runs
  ExtentMap map;                     // built from `extents` (ReadFile only)
  std::vector<uint64_t> map_blocks;  // index / indirect blocks of the file
};

// A half-open range of filesystem blocks [start, end) and what it holds.
struct MetadataRange {
  uint64_t start = 0;
  uint64_t end = 0;
  std::string what;  // "inode table of group 3", "journal", ...
};

class Ext4Reader {
 public:
  static constexpr int kMaxDepth = 5;
  static constexpr int kChecksumRetries = 5;

 private:
  static absl::StatusOr<std::unique_ptr<Ext4Reader>> OpenOnce(
      const std::string& source, const ReaderOptions& options);

 public:

  // Opens `source` (an image file or a block device) read-only. Errors:
  // EXT4DIO_E_NOT_EXT4 (no ext2/3/4 superblock), EXT4DIO_E_CORRUPT_FS (bad
  // superblock or group descriptors), EXT4DIO_E_TRUNCATED (the filesystem is
  // larger than what holds it), EXT4DIO_E_UNSUPPORTED_FS, errno errors.
  // Live: a superblock or descriptor caught mid-update fails its checksum;
  // the open is retried kChecksumRetries times before that is reported.
  static absl::StatusOr<std::unique_ptr<Ext4Reader>> Open(
      const std::string& source, const ReaderOptions& options);
  ~Ext4Reader();

  const std::string& source() const { return source_; }
  uint32_t block_size() const { return block_size_; }
  uint64_t offset() const { return options_.offset; }
  uint64_t blocks_count() const { return blocks_count_; }
  uint64_t source_size() const { return source_size_; }
  // Warnings found while opening (errors flag, needs recovery, mounted).
  const std::vector<std::string>& warnings() const { return warnings_; }
  // The filesystem UUID as statfs reports it in f_fsid on Linux ext4.
  uint64_t fsid() const { return fsid_; }

  // Inode of `path` (from the filesystem root; symlinks followed, the final
  // one too). NotFound when it does not exist.
  absl::StatusOr<uint64_t> LookupPath(absl::string_view path);

  // Reads and validates the inode's map. Refuses (EXT4DIO_E_UNSUPPORTED_FILE)
  // non-regular, reserved, inline-data, encrypted, verity, EA-inode and
  // data-journaled files; EXT4DIO_E_NOT_IN_USE for a free inode number.
  // Validation (EXT4DIO_E_CORRUPT_MAP naming the first problem): sorted,
  // non-overlapping, inside the filesystem and the device, no two blocks of
  // the file shared, not on filesystem metadata (superblocks and backups,
  // descriptors, reserved GDT, bitmaps, inode tables, journal, resize inode,
  // MMP, blocks the bad-blocks inode lists) nor on the file's own index blocks, and marked in use in the block
  // bitmap of its group.
  absl::StatusOr<FileLayout> ReadFile(uint64_t inode);

  // Why writing file data into this filesystem offline (image mode) would
  // be unsafe, or OK: EXT4DIO_E_IN_USE when MMP shows it in use;
  // EXT4DIO_E_WRITE_REFUSED when the journal needs recovery, the errors
  // flag is set, it was not cleanly unmounted, or it has ro_compat/incompat
  // features this library does not know, shared blocks or the read-only
  // feature.
  absl::Status WriteRefusal();

  // Image mode, before writing: no other in-use inode (nor the bad-blocks
  // inode) claims a block of `layout` (see ownership.h). An inode scan of
  // the whole filesystem, so only writers pay for it.
  absl::Status CheckOwnership(const FileLayout& layout);

  // Checks extents (e.g. from FIEMAP) against the filesystem exactly as
  // ReadFile checks its own, with `map_blocks` as the file's index blocks
  // (live: with fresh group descriptors, checksum failures retried).
  absl::Status ValidateExtents(const std::vector<Extent>& extents,
                               const std::vector<uint64_t>& map_blocks);

  // The metadata ranges of the whole filesystem, merged and sorted (for tests
  // and diagnostics).
  absl::StatusOr<std::vector<MetadataRange>> Metadata();

 private:
  Ext4Reader(std::string source, const ReaderOptions& options);

  absl::StatusOr<FileLayout> ReadFileOnce(uint64_t inode)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Validate(const std::vector<Extent>& extents,
                        const std::vector<uint64_t>& map_blocks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BuildMetadata() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Live mode: reopens the filesystem for current group descriptors.
  absl::Status Refresh() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `once` (returning a StatusOr) and, on a live filesystem, retries
  // checksum failures with fresh descriptors; refresh_first reads them
  // afresh before the first attempt too (else only after a failure).
  template <typename T, typename F>
  T Retrying(F&& once, bool refresh_first) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckInodeAllocated(uint64_t inode)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string source_;
  const ReaderOptions options_;
  uint32_t block_size_ = 0;
  uint64_t blocks_count_ = 0;
  uint64_t source_size_ = 0;
  uint64_t fsid_ = 0;
  std::vector<std::string> warnings_;

  Mutex mu_;
  struct_ext2_filsys* fs_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool metadata_built_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<MetadataRange> metadata_ ABSL_GUARDED_BY(mu_);
};

// Merges extents that are logically and physically contiguous and of the
// same kind (what FIEMAP may report as one, via ext4's extent cache).
std::vector<Extent> MergeContiguous(const std::vector<Extent>& extents);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_EXT4_READER_H_
