// ImageFile (image_file.h): image mode's open and I/O.
#include "image_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "errors.h"
#include "ext4_reader.h"
#include "image_lock.h"

namespace ext4dio {

ImageFile::ImageFile() : File(/*mounted=*/false) {}

absl::StatusOr<std::shared_ptr<File>> ImageFile::Open(const OpenOptions& options) {
  std::shared_ptr<ImageFile> f(new ImageFile());
  f->options_ = options;
  f->os_ = options.os ? options.os : RealOs();
  const Target& t = options.target;
  f->name_ = t.inode ? absl::StrFormat("%s: inode %d", t.image, t.inode)
                     : absl::StrCat(t.image, ":", t.path);

  // Open and claim before reading the map, so no other writer changes what
  // we read.
  const int flags = (options.write ? O_RDWR : O_RDONLY);
  struct stat st;
  if (::stat(t.image.c_str(), &st) != 0) return ErrnoError(errno, "stat " + t.image);
  if (absl::Status s = CheckImageKind(t.image); !s.ok()) return s;  // before any open
  const bool is_blk = S_ISBLK(st.st_mode);
  f->fd_direct_ = f->os_->Open(t.image.c_str(), flags | O_DIRECT | (options.write && is_blk ? O_EXCL : 0), 0);
  if (f->fd_direct_ < 0) {
    const int err = -f->fd_direct_;
    if (err == EBUSY) {
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrCat(t.image, " is in use (mounted in some mount namespace, lazily "
                                            "unmounted with a file still open, or opened "
                                            "exclusively by another program)"));
    }
    if (options.write && (err == EACCES || err == EROFS || err == EPERM)) {
      return LibError(EXT4DIO_E_WRITE_REFUSED,
                      absl::StrCat(t.image, " cannot be opened for writing: ", strerror(err)));
    }
    return ErrnoError(err, "open " + t.image);
  }
  struct stat opened;
  if (::fstat(f->fd_direct_, &opened) != 0) return ErrnoError(errno, "stat " + t.image);
  if ((opened.st_mode & S_IFMT) != (st.st_mode & S_IFMT) || opened.st_dev != st.st_dev ||
      opened.st_ino != st.st_ino || opened.st_rdev != st.st_rdev)
    return ErrnoError(ESTALE, t.image + " changed while it was being opened");
  f->fd_buffered_ = f->os_->Open(t.image.c_str(), flags, 0);
  if (f->fd_buffered_ < 0) return ErrnoError(-f->fd_buffered_, "open " + t.image);
  std::string claim_warning;
  if (options.write) {
    // Locks on the image file and exclusive opens of the loop devices over
    // it (image_lock.h): every other writer and every mount, seen or not.
    auto claim = ImageClaim::Acquire(f->fd_direct_, t.image, &claim_warning);
    if (!claim.ok()) return claim.status();
    f->claim_ = std::move(*claim);
  }

  LoadOptions load;
  load.for_write = options.write;
  load.skip_ownership_check = options.skip_ownership_check;
  auto loaded = LoadMap(t, load);
  if (!loaded.ok()) return loaded.status();
  if (options.write && !loaded->write_status.ok()) return loaded->write_status;
  {
    MutexLock lock(&f->warning_mu_);
    f->warning_ = loaded->warning;
    if (!claim_warning.empty()) {
      f->warning_ =
          f->warning_.empty() ? claim_warning : absl::StrCat(f->warning_, "; ", claim_warning);
    }
  }
  f->SetMap(std::move(*loaded));
  if (absl::Status s = f->SetUpBackend(t.image); !s.ok()) return s;
  return f;
}

absl::StatusOr<size_t> ImageFile::Pwrite(const void* buf, size_t n, uint64_t offset) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  Borrowed ex(*this);
  if (ex.get() == nullptr) return ex.error();
  std::vector<Piece>& pieces = ex.get()->pieces();
  if (absl::Status s = ext4dio::PlanWriteInto(cur().loaded.map, cur().written, offset, n, plan_,
                                              &pieces);
      !s.ok()) {
    return Prefixed(name_ + ": ", s);
  }
  if (n == 0) return 0;
  if (absl::Status s = WritePieces(*ex.get(), pieces, static_cast<const char*>(buf), offset);
      !s.ok())
    return s;
  return n;
}

absl::StatusOr<size_t> ImageFile::Pread(void* buf, size_t n, uint64_t offset) {
  Borrowed ex(*this);
  if (ex.get() == nullptr) return ex.error();
  return PreadMapped(*ex.get(), static_cast<char*>(buf), n, offset);
}

absl::Status ImageFile::Sync() {
  if (int rc = os_->Flush(fd_direct_); rc < 0)
    return ErrnoError(-rc, absl::StrCat(name_, ": flushing the device cache"));
  return absl::OkStatus();
}

absl::Status ImageFile::StartAsync(DeviceExecutor& ex, const AsyncRequest& req) {
  char* base = static_cast<char*>(req.buf);
  std::vector<Piece>& pieces = ex.pieces();
  if (!req.write) {
    return CommitRead(ex, req.cookie, /*sync=*/false, base, req.length, req.offset).status();
  }
  const MapState& m = cur();
  if (absl::Status s =
          ext4dio::PlanWriteInto(m.loaded.map, m.written, req.offset, req.length, plan_, &pieces);
      !s.ok())
    return Prefixed(name_ + ": ", s);
  bool unaligned = false;
  for (const Piece& p : pieces) unaligned |= p.kind != Piece::kDirect;
  if (!unaligned) {
    // Every piece is direct: the request's result is req.length.
    return CommitDirectWrite(ex, req.cookie, /*sync=*/false, pieces, base, req.offset).status();
  }
  // Finish what is in flight, then run the whole request here on this
  // queue's ring, exactly as a synchronous write.
  if (absl::Status s = ex.Drain(); !s.ok()) return s;
  AsyncCompletion c;
  c.cookie = req.cookie;
  const Piece* failed = nullptr;
  absl::Status s = WritePieces(ex, pieces, base, req.offset, &failed);
  if (s.ok()) {
    c.result = static_cast<int64_t>(req.length);
  } else {
    c.result = CodeOf(s);
    // The unaligned piece that failed, or the direct pieces as a group.
    c.error_offset = failed ? failed->file_offset : req.offset;
    c.error_length = failed ? failed->length : req.length;
  }
  ex.Complete(c);
  return absl::OkStatus();
}

size_t ImageFile::SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                              absl::Status* refused) {
  size_t i = 0;
  for (; i < reqs.size(); ++i) {
    if (reqs[i].write && !options_.write) {
      *refused = ErrnoError(EBADF, name_ + ": opened read-only");
      break;
    }
    if (absl::Status s = StartAsync(ex, reqs[i]); !s.ok()) {
      *refused = std::move(s);
      break;
    }
  }
  // One submission for the batch. A failure here is a broken ring, which
  // the next Reap reports.
  (void)ex.Flush();
  return i;
}

absl::StatusOr<std::vector<Piece>> ImageFile::PlanWrite(uint64_t offset, uint64_t n,
                                                        bool show_refused) const {
  std::shared_ptr<const MapState> state = current();
  PlanOptions options = plan_;
  options.show_refused = show_refused;
  return ext4dio::PlanWrite(state->loaded.map, state->written, offset, n, options);
}

uint64_t ImageFile::WritableUntil(uint64_t offset, uint64_t n) const {
  return ext4dio::WritableUntil(cur().loaded.map, offset, n);
}

absl::Status ImageFile::Truncate(uint64_t) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  return LibError(EXT4DIO_E_WRITE_REFUSED,
                  name_ + ": truncating needs the filesystem; image mode never changes metadata");
}

absl::Status ImageFile::Fallocate(int, uint64_t, uint64_t) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  return LibError(EXT4DIO_E_WRITE_REFUSED,
                  name_ + ": fallocate needs the filesystem; image mode never changes metadata");
}

ImageFile::~ImageFile() {
  CloseDevice();  // the device's descriptors before the image's locks
  claim_.reset();
}

}  // namespace ext4dio
