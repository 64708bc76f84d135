#include "remap.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "errors.h"

namespace ext4dio {
namespace {

// `a` without what `b` covers (both sorted and disjoint).
RangeList Subtract(const RangeList& a, const RangeList& b) {
  RangeList out;
  size_t k = 0;
  for (auto [lo, hi] : a) {
    while (k < b.size() && b[k].second <= lo) ++k;
    for (size_t j = k; j < b.size() && b[j].first < hi; ++j) {
      if (b[j].first > lo) out.emplace_back(lo, b[j].first);
      lo = std::max(lo, b[j].second);
    }
    if (lo < hi) out.emplace_back(lo, hi);
  }
  return out;
}

}  // namespace

absl::StatusOr<RemapOutput> Remap(const RemapInput& in) {
  const MapState& old = *in.old;
  const PendingRemap::Batch& batch = *in.batch;
  const ExtentMap& m = old.loaded.map;
  const uint64_t bs = m.block_size();
  RemapOutput out;
  // In blocks: what FIEMAP must tell (holes filled, writes that failed,
  // were short or buffered, partial blocks), and the unwritten blocks that
  // clean O_DIRECT writes covered -- ext4 converted those in place (it
  // never moves a block to convert it), so they are written where the map
  // already says, blocks it validated when it was read.
  RangeList ask, convert;
  for (const auto& r : batch.suspect) ask.emplace_back(r.first / bs, (r.second + bs - 1) / bs);
  for (const auto& r : batch.ranges) {
    const uint64_t lo = r.first / bs, hi = (r.second + bs - 1) / bs;
    if (r.first % bs != 0 || r.second % bs != 0) {
      ask.emplace_back(lo, hi);
      continue;
    }
    uint64_t b = lo;
    const int64_t floor = m.FindFloor(lo);
    for (size_t i = floor < 0 ? 0 : static_cast<size_t>(floor); b < hi;) {
      if (i >= m.extent_count()) {
        ask.emplace_back(b, hi);
        break;
      }
      const Extent e = m.ExtentAt(i);
      const uint64_t e_end = e.logical + e.length;
      if (e_end <= b) {
        ++i;
        continue;
      }
      if (e.logical > b) {  // a hole: allocated somewhere FIEMAP knows
        const uint64_t to = std::min(hi, e.logical);
        ask.emplace_back(b, to);
        b = to;
        continue;
      }
      const uint64_t to = std::min(hi, e_end);
      if (e.unwritten) convert.emplace_back(b, to);
      b = to;
      ++i;
    }
  }
  SortAndMerge(ask);
  // FIEMAP per merged span. It may answer for whole extents: what it
  // returns widens the span it replaces.
  std::vector<Extent> fresh;
  RangeList replaced;
  for (const auto& sp : ask) {
    auto extents = in.fiemap(sp.first * bs, (sp.second - sp.first) * bs);
    if (!extents.ok()) return extents.status();
    uint64_t lo = sp.first, hi = sp.second;
    for (const Extent& e : *extents) {
      lo = std::min(lo, e.logical);
      hi = std::max(hi, e.logical + e.length);
    }
    replaced.emplace_back(lo, hi);
    ++out.fiemap_calls;
    fresh.insert(fresh.end(), extents->begin(), extents->end());
  }
  SortAndMerge(replaced);
  SortAndMerge(convert);
  convert = Subtract(convert, replaced);  // FIEMAP's word wins
  std::sort(fresh.begin(), fresh.end(),
            [](const Extent& a, const Extent& b) { return a.logical < b.logical; });
  fresh.erase(std::unique(fresh.begin(), fresh.end(),
                          [](const Extent& a, const Extent& b) {
                            return a.logical == b.logical;
                          }),
              fresh.end());
  if (!fresh.empty()) {
    if (absl::Status s = in.validate(fresh); !s.ok()) return s;
  }
  // One pass over the old extents for the whole batch: outside the
  // replaced spans kept (unwritten ones split where converted), inside
  // them the fresh extents.
  std::vector<Extent> extents;
  extents.reserve(m.extent_count() + fresh.size() + 2 * convert.size());
  // Device byte ranges newly written (the new written set is the old one
  // and these, merged), and those the old map showed written inside the
  // replaced spans (FIEMAP must still show them: blocks are never freed
  // behind the gate's Exclusive).
  const uint64_t base = m.geometry().device_offset;
  RangeList added, had;
  auto bytes = [&](uint64_t physical, uint64_t blocks) {
    return std::make_pair(base + physical * bs, base + (physical + blocks) * bs);
  };
  for (const Extent& e : fresh)
    if (!e.unwritten) added.push_back(bytes(e.physical, e.length));
  RangeList fresh_written = added;
  SortAndMerge(fresh_written);
  size_t f = 0, sp = 0, cv = 0;
  auto push = [&](const Extent& x) {
    // Merge with the previous extent where both are contiguous (ext4 does
    // the same on disk): the map stays as small as the file's tree.
    if (!extents.empty()) {
      Extent& last = extents.back();
      if (last.unwritten == x.unwritten && last.logical + last.length == x.logical &&
          last.physical + last.length == x.physical &&
          uint64_t{last.length} + x.length <= 32768) {
        last.length += x.length;
        return;
      }
    }
    extents.push_back(x);
  };
  auto emit = [&](const Extent& e, uint64_t from, uint64_t to, bool unwritten) {
    while (f < fresh.size() && fresh[f].logical < from) push(fresh[f++]);
    Extent piece = e;
    piece.physical += from - e.logical;
    piece.logical = from;
    piece.length = static_cast<uint32_t>(to - from);
    piece.unwritten = unwritten;
    if (e.unwritten && !unwritten) {
      added.push_back(bytes(piece.physical, piece.length));
      out.converted_blocks += piece.length;
    }
    push(piece);
  };
  for (size_t i = 0; i < m.extent_count(); ++i) {
    const Extent e = m.ExtentAt(i);
    uint64_t from = e.logical;
    const uint64_t e_end = e.logical + e.length;
    while (from < e_end) {
      while (sp < replaced.size() && replaced[sp].second <= from) ++sp;
      if (sp < replaced.size() && replaced[sp].first <= from) {
        const uint64_t to = std::min(e_end, replaced[sp].second);  // inside a span: replaced
        if (!e.unwritten) had.push_back(bytes(e.physical + (from - e.logical), to - from));
        from = to;
        continue;
      }
      const uint64_t cut = std::min(e_end, sp < replaced.size() ? replaced[sp].first : UINT64_MAX);
      if (!e.unwritten) {
        emit(e, from, cut, false);
        from = cut;
        continue;
      }
      while (from < cut) {
        while (cv < convert.size() && convert[cv].second <= from) ++cv;
        if (cv < convert.size() && convert[cv].first <= from) {
          const uint64_t to = std::min(cut, convert[cv].second);
          emit(e, from, to, false);  // converted by a clean kernel-path write
          from = to;
        } else {
          const uint64_t to =
              std::min(cut, cv < convert.size() ? convert[cv].first : UINT64_MAX);
          emit(e, from, to, true);
          from = to;
        }
      }
    }
  }
  while (f < fresh.size()) push(fresh[f++]);
  SortAndMerge(had);
  for (const auto& h : had) {
    auto it = FirstEndingAfter(fresh_written, h.first);
    if (it == fresh_written.end() || it->first > h.first || it->second < h.second) {
      return (LibError(EXT4DIO_E_MAP_MISMATCH,
                           absl::StrFormat("device bytes %d..%d, written data of the file in "
                                           "its map, are no longer its written data (FIEMAP)",
                                           h.first, h.second - 1)));
    }
  }
  MapGeometry g = m.geometry();
  g.file_size = in.file_size;
  auto map = ExtentMap::Build(g, extents);
  if (!map.ok()) return LibError(EXT4DIO_E_CORRUPT_MAP, map.status().message());
  LoadedMap& next = out.loaded;
  next.map = std::move(*map);
  next.inode = old.loaded.inode;
  next.cluster_size = old.loaded.cluster_size;
  next.extent_tree = old.loaded.extent_tree;
  next.depth = old.loaded.depth;
  next.source = MapSource::kFiemap;
  next.device = old.loaded.device;
  next.warning = old.loaded.warning;
  next.inode_flags = old.loaded.inode_flags;
  out.written = old.written.With(std::move(added));
  return out;
}

}  // namespace ext4dio
