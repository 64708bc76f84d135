#include "planner.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "aligned.h"
#include "errors.h"

namespace ext4dio {
namespace {

const char* SegmentName(SegmentKind k) {
  switch (k) {
    case SegmentKind::kMapped: return "written data";
    case SegmentKind::kUnwritten: return "an unwritten (preallocated) extent";
    case SegmentKind::kHole: return "a hole";
    case SegmentKind::kPastEof: return "past end of file";
  }
  return "?";
}

}  // namespace

const char* PieceKindName(Piece::Kind kind) {
  switch (kind) {
    case Piece::kDirect: return "fast";
    case Piece::kRmw: return "fast-rmw";
    case Piece::kBuffered: return "buffered";
    case Piece::kZero: return "zero";
    case Piece::kEof: return "eof";
    case Piece::kRefused: return "refused";
    case Piece::kKernel: return "kernel";
  }
  return "?";
}

WrittenSet::WrittenSet(const ExtentMap& map) {
  const uint64_t bs = map.block_size();
  const uint64_t base = map.geometry().device_offset;
  for (size_t i = 0; i < map.extent_count(); ++i) {
    const Extent e = map.ExtentAt(i);
    if (e.unwritten) continue;
    ranges_.emplace_back(base + e.physical * bs, base + (e.physical + e.length) * bs);
  }
  SortAndMerge(ranges_);
}

WrittenSet WrittenSet::With(RangeList added) const {
  SortAndMerge(added);
  WrittenSet out;
  out.ranges_.reserve(ranges_.size() + added.size());
  size_t a = 0, b = 0;
  while (a < ranges_.size() || b < added.size()) {
    const auto& next = (b == added.size() || (a < ranges_.size() && ranges_[a] < added[b]))
                           ? ranges_[a++]
                           : added[b++];
    if (!out.ranges_.empty() && next.first <= out.ranges_.back().second) {
      out.ranges_.back().second = std::max(out.ranges_.back().second, next.second);
    } else {
      out.ranges_.push_back(next);
    }
  }
  return out;
}

bool WrittenSet::Contains(uint64_t offset, uint64_t length) const {
  if (length == 0) return true;
  if (offset + length < offset) return false;
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                             [](uint64_t v, const std::pair<uint64_t, uint64_t>& r) {
                               return v < r.first;
                             });
  if (it == ranges_.begin()) return false;
  --it;
  return it->first <= offset && offset + length <= it->second;
}

uint64_t WritableUntil(const ExtentMap& map, uint64_t offset, uint64_t length) {
  uint64_t pos = offset;
  const uint64_t end = offset + length;
  while (pos < end) {
    const Segment s = map.SegmentAt(pos, end - pos);
    if (s.kind != SegmentKind::kMapped) return pos;
    pos += s.length;
  }
  return end;
}

absl::Status PlanWriteInto(const ExtentMap& map, const WrittenSet& written, uint64_t offset,
                           uint64_t length, const PlanOptions& options,
                           std::vector<Piece>* out) {
  std::vector<Piece>& pieces = *out;
  pieces.clear();
  if (length == 0) return absl::OkStatus();
  if (length > UINT64_MAX - offset) return ErrnoError(EINVAL, "offset + length overflows");
  const uint64_t a = options.alignment.offset;
  if (length <= options.max_io && (options.kernel_only == nullptr || options.kernel_only->empty())) {
    // The common case, in short: one aligned overwrite inside one written
    // extent. Anything else is planned in full below.
    const Segment s = map.SegmentAt(offset, length);
    if (s.kind == SegmentKind::kMapped && s.length == length && s.device_offset % a == 0 &&
        length % a == 0) {
      pieces.push_back(Piece{Piece::kDirect, offset, length, s.device_offset});
      return absl::OkStatus();
    }
  }
  const uint64_t max_io = std::max<uint64_t>(a, AlignDown(options.max_io, a));
  const uint64_t end = offset + length;

  auto kernel = [&](uint64_t f, uint64_t n) {
    if (!pieces.empty() && pieces.back().kind == Piece::kKernel &&
        pieces.back().file_offset + pieces.back().length == f) {
      pieces.back().length += n;
    } else {
      pieces.push_back(Piece{Piece::kKernel, f, n, 0});
    }
  };
  auto unaligned = [&](uint64_t f, uint64_t d, uint64_t n) {
    const uint64_t unit = AlignDown(d, a);
    if (written.Contains(unit, a)) {
      pieces.push_back(Piece{Piece::kRmw, f, n, d});
    } else if (options.kernel_path) {
      kernel(f, n);
    } else {
      pieces.push_back(Piece{Piece::kBuffered, f, n, d});
    }
  };
  for (uint64_t pos = offset; pos < end;) {
    const Segment s = map.SegmentAt(pos, end - pos);
    if (s.kind != SegmentKind::kMapped && options.kernel_path) {
      kernel(s.offset, s.length);
      pos += s.length;
      continue;
    }
    if (s.kind != SegmentKind::kMapped) {
      // Planning writes nothing, so failing here refuses the request as a
      // whole: nothing is written unless everything can be.
      if (!options.show_refused) {
        return LibError(EXT4DIO_E_NEEDS_ALLOCATION,
                        absl::StrFormat("bytes %d..%d are %s%s: writing them needs block "
                                        "allocation, which %s",
                                        s.offset, s.offset + s.length - 1, SegmentName(s.kind),
                                        s.kind == SegmentKind::kPastEof
                                            ? absl::StrFormat(" (size %d)", map.file_size())
                                            : "",
                                        options.refusal));
      }
      pieces.push_back(Piece{Piece::kRefused, s.offset, s.length, 0});
      pos += s.length;
      continue;
    }
    uint64_t n = s.length;
    if (options.kernel_only != nullptr && !options.kernel_only->empty()) {
      // Pinned ranges inside this segment go through the kernel: split it.
      const RangeList& ko = *options.kernel_only;
      auto it = FirstEndingAfter(ko, s.offset);
      if (it != ko.end() && it->first <= s.offset) {
        const uint64_t k = std::min(it->second, s.offset + n) - s.offset;
        if (!options.kernel_path) {
          if (!options.show_refused) {
            return LibError(EXT4DIO_E_NEEDS_ALLOCATION,
                            absl::StrFormat("bytes %d..%d are held in the page cache by "
                                            "someone (pinned pages): only the kernel path "
                                            "can write them coherently, which %s",
                                            s.offset, s.offset + k - 1, options.refusal));
          }
          pieces.push_back(Piece{Piece::kRefused, s.offset, k, 0});
        } else {
          kernel(s.offset, k);
        }
        pos += k;
        continue;
      }
      if (it != ko.end() && it->first < s.offset + n) n = it->first - s.offset;
    }
    const uint64_t d = s.device_offset, f = s.offset;
    const uint64_t head_end = std::min(AlignUp(d, a), d + n);
    if (d % a != 0) unaligned(f, d, head_end - d);
    const uint64_t body_start = AlignUp(d, a), body_end = AlignDown(d + n, a);
    for (uint64_t b = body_start; b < body_end;) {
      const uint64_t len = std::min(max_io, body_end - b);
      pieces.push_back(Piece{Piece::kDirect, f + (b - d), len, b});
      b += len;
    }
    const uint64_t tail_start = std::max(body_end, head_end);
    if (tail_start < d + n) unaligned(f + (tail_start - d), tail_start, d + n - tail_start);
    pos += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Piece>> PlanWrite(const ExtentMap& map, const WrittenSet& written,
                                             uint64_t offset, uint64_t length,
                                             const PlanOptions& options) {
  std::vector<Piece> pieces;
  if (absl::Status s = PlanWriteInto(map, written, offset, length, options, &pieces); !s.ok())
    return s;
  return pieces;
}

absl::Status PlanReadInto(const ExtentMap& map, uint64_t offset, uint64_t length,
                          const PlanOptions& options, std::vector<Piece>* out) {
  std::vector<Piece>& pieces = *out;
  pieces.clear();
  if (length == 0) return absl::OkStatus();
  if (length > UINT64_MAX - offset) return ErrnoError(EINVAL, "offset + length overflows");
  const uint64_t end = offset + length;
  const uint64_t max_io = std::max<uint64_t>(options.alignment.offset, options.max_io);
  for (uint64_t pos = offset; pos < end;) {
    const Segment s = map.SegmentAt(pos, end - pos);
    switch (s.kind) {
      case SegmentKind::kPastEof:
        pieces.push_back(Piece{Piece::kEof, s.offset, s.length, 0});
        return absl::OkStatus();
      case SegmentKind::kHole:
      case SegmentKind::kUnwritten:
        pieces.push_back(Piece{Piece::kZero, s.offset, s.length, 0});
        break;
      case SegmentKind::kMapped:
        for (uint64_t done = 0; done < s.length;) {
          const uint64_t len = std::min(max_io, s.length - done);
          pieces.push_back(Piece{Piece::kDirect, s.offset + done, len, s.device_offset + done});
          done += len;
        }
        break;
    }
    pos += s.length;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Piece>> PlanRead(const ExtentMap& map, uint64_t offset,
                                            uint64_t length, const PlanOptions& options) {
  std::vector<Piece> pieces;
  if (absl::Status s = PlanReadInto(map, offset, length, options, &pieces); !s.ok()) return s;
  return pieces;
}

}  // namespace ext4dio
