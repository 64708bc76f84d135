#include "map_loader.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <utility>

#include <ext2fs/ext2_fs.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "device.h"
#include "errors.h"
#include "ext4_reader.h"
#include "fiemap.h"
#include "image_lock.h"

namespace ext4dio {
namespace {

// REQUIRES: layout.map built from layout.extents (Ext4Reader::ReadFile does).
LoadedMap FromLayout(FileLayout layout, MapSource source, std::string device,
                     std::string warning) {
  LoadedMap out;
  out.map = std::move(layout.map);
  out.inode = layout.inode;
  out.cluster_size = layout.cluster_size;
  out.extent_tree = layout.extent_tree;
  out.depth = layout.depth;
  out.inode_flags = layout.flags;
  out.source = source;
  out.device = std::move(device);
  out.warning = std::move(warning);
  return out;
}

absl::StatusOr<LoadedMap> LoadImage(const Target& t, const LoadOptions& lo) {
  if (absl::Status s = CheckImageKind(t.image); !s.ok()) return s;  // a FIFO would block
  ReaderOptions options;
  options.offset = t.image_offset;
  auto reader = Ext4Reader::Open(t.image, options);
  if (!reader.ok()) return reader.status();
  uint64_t ino = t.inode;
  if (ino == 0) {
    auto found = (*reader)->LookupPath(t.path);
    if (!found.ok()) return found.status();
    ino = *found;
  }
  auto layout = (*reader)->ReadFile(ino);
  if (!layout.ok()) return layout.status();
  // Filesystem state first: the ownership scan is only worth its cost when
  // nothing else refuses the write.
  absl::Status write_status = (*reader)->WriteRefusal();
  std::string skipped;
  if (lo.for_write && lo.skip_ownership_check) {
    skipped = "block ownership not checked (asked to skip it): if another file also "
              "claims this file's blocks, writing changes that file too";
  } else if (lo.for_write && write_status.ok()) {
    write_status = (*reader)->CheckOwnership(*layout);
  }
  std::string warning = absl::StrJoin((*reader)->warnings(), "; ");
  if (!skipped.empty()) warning = warning.empty() ? skipped : absl::StrCat(warning, "; ", skipped);
  absl::StatusOr<LoadedMap> loaded =
      FromLayout(std::move(*layout), MapSource::kImage, t.image, std::move(warning));
  loaded->write_status = std::move(write_status);
  const std::string who = absl::StrFormat("%s: inode %d", t.image, loaded->inode);
  if (loaded->write_status.ok() && (loaded->inode_flags & EXT2_IMMUTABLE_FL)) {
    loaded->write_status = LibError(EXT4DIO_E_WRITE_REFUSED,
                                    who + " is immutable (chattr +i)");
  }
  if (loaded->write_status.ok() && (loaded->inode_flags & EXT2_APPEND_FL)) {
    loaded->write_status = LibError(
        EXT4DIO_E_WRITE_REFUSED,
        who + " is append-only (chattr +a): only appends are allowed, and "
              "appending needs allocation, which image mode cannot do");
  }
  return loaded;
}

absl::StatusOr<LoadedMap> LoadMounted(const Target& t) {
  auto file = InspectMountedFile(t.path);
  if (!file.ok()) return file.status();
  MountedFileInfo& mf = *file;
  if (mf.device.empty()) {
    return LoadFiemapOnly(mf.fd, mf, absl::StrCat("no device node for the filesystem (",
                                                  mf.device_error,
                                                  "): map from FIEMAP alone, not validated "
                                                  "against on-disk metadata"));
  }

  ReaderOptions options;
  options.live = true;
  auto reader = Ext4Reader::Open(mf.device, options);
  if (!reader.ok() && !IsAccessError(reader.status())) return reader.status();
  if (!reader.ok()) {
    return LoadFiemapOnly(mf.fd, mf, absl::StrCat("cannot read ", mf.device, " (",
                                                  reader.status().message(),
                                                  "): map from FIEMAP alone, not validated "
                                                  "against on-disk metadata"));
  }
  return LoadMountedMap(**reader, mf.fd, mf);
}

}  // namespace

absl::StatusOr<LoadedMap> LoadFiemapOnly(Os& os, int fd, const MountedFileInfo& mf,
                                         std::string warning) {
  auto fiemap = ReadFiemap(os, fd, /*sync=*/true, mf.path);
  if (!fiemap.ok()) return fiemap.status();
  auto extents = FiemapToExtents(*fiemap, mf.block_size, 0, mf.path);
  if (!extents.ok()) return extents.status();
  struct stat st;
  if (int rc = os.Fstat(fd, &st); rc < 0) return ErrnoError(-rc, "stat " + mf.path);
  FileLayout layout;
  layout.inode = mf.inode;
  layout.size = static_cast<uint64_t>(st.st_size);
  layout.block_size = mf.block_size;
  layout.cluster_size = mf.block_size;
  layout.extents = std::move(*extents);
  auto map = ExtentMap::Build(MapGeometry{layout.block_size, 0, layout.size}, layout.extents);
  if (!map.ok()) return LibError(EXT4DIO_E_CORRUPT_MAP, map.status().message());
  layout.map = std::move(*map);
  return FromLayout(std::move(layout), MapSource::kFiemap, mf.device, std::move(warning));
}

absl::StatusOr<LoadedMap> LoadMountedMap(Os& os, Ext4Reader& reader, int fd,
                                         const MountedFileInfo& mf) {
  if (reader.fsid() != mf.fsid) {
    return LibError(EXT4DIO_E_MAP_MISMATCH,
                    absl::StrFormat("%s does not hold the filesystem of %s "
                                    "(UUIDs differ)", mf.device, mf.path));
  }
  std::string difference;
  for (int attempt = 1; attempt <= kCrossCheckAttempts; ++attempt) {
    // FIEMAP first, with SYNC: delayed allocations become real blocks that
    // the on-disk tree then shows.
    auto fiemap = ReadFiemap(os, fd, /*sync=*/true, mf.path);
    if (!fiemap.ok()) return fiemap.status();
    auto layout = reader.ReadFile(mf.inode);
    if (!layout.ok()) return layout.status();
    auto extents = FiemapToExtents(*fiemap, layout->block_size, 0, mf.path);
    if (!extents.ok()) return extents.status();
    difference = FirstDifference(layout->extents, *extents);
    if (difference.empty()) {
      return FromLayout(std::move(*layout), MapSource::kDevice, mf.device,
                        absl::StrJoin(reader.warnings(), "; "));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * attempt));
  }
  return LibError(EXT4DIO_E_MAP_MISMATCH,
                  absl::StrFormat("%s: the on-disk extent tree in %s and FIEMAP "
                                  "disagree at %s",
                                  mf.path, mf.device, difference));
}

absl::StatusOr<LoadedMap> LoadMap(const Target& target, const LoadOptions& options) {
  if (!target.image.empty()) {
    if (target.inode == 0 && target.path.empty()) {
      return ErrnoError(EINVAL, "image mode needs a path inside the filesystem or an inode");
    }
    return LoadImage(target, options);
  }
  if (target.path.empty()) return ErrnoError(EINVAL, "no file given");
  if (target.inode != 0) {
    return ErrnoError(EINVAL, "an inode number needs an image (--image)");
  }
  return LoadMounted(target);
}

}  // namespace ext4dio
