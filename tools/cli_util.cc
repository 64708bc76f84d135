#include "cli_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <blkid/blkid.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

namespace ext4dio::cli {

std::optional<uint64_t> ParseSize(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return std::nullopt;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    value = value * 10 + d;
    ++i;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      default: return std::nullopt;
    }
    const std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "ib" || rest == "b")) return std::nullopt;
  }
  if (shift && value > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return value << shift;
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto parsed = ParseSize(value);
        if (!parsed) {
          return "'" + value + "' is not a size (bytes, or a number with K, M, G or T)";
        }
        value = std::to_string(*parsed);
        return {};
      },
      // No description: CLI11 would append it to the value's name in --help.
      "", "size");
}

Buffer AllocBuffer(uint64_t size, uint32_t align) {
  void* p = nullptr;
  const size_t a = std::max<size_t>({align, sizeof(void*), 4096});
  if (posix_memalign(&p, a, std::max<uint64_t>(size, 1)) != 0) return nullptr;
  return Buffer(static_cast<char*>(p));
}

int Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    app.exit(e);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    return UsageError(app.get_name(), e.what());
  }
  return -1;
}

int UsageError(const std::string& tool, const std::string& message) {
  std::fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", tool.c_str(),
               message.c_str(), tool.c_str());
  return kExitUsage;
}

namespace {

constexpr size_t kHelpWidth = 79;
constexpr size_t kHelpColumn = 30;  // where option descriptions start

// `text` broken into lines of at most `width` columns (words longer than
// that stand alone), every line but the first indented by `indent`.
std::string Wrap(const std::string& text, size_t indent, size_t first_used, size_t width) {
  std::string out;
  size_t col = first_used;
  size_t i = 0;
  bool first_word = true;
  while (i < text.size()) {
    if (text[i] == ' ') {
      ++i;
      continue;
    }
    if (text[i] == '\n') {
      out += "\n" + std::string(indent, ' ');
      col = indent;
      first_word = true;
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\n') ++j;
    const std::string word = text.substr(i, j - i);
    if (!first_word && col + 1 + word.size() > width) {
      out += "\n" + std::string(indent, ' ');
      col = indent;
      first_word = true;
    }
    if (!first_word) {
      out += ' ';
      ++col;
    }
    out += word;
    col += word.size();
    first_word = false;
    i = j;
  }
  return out;
}

class GnuFormatter : public CLI::Formatter {
 public:
  explicit GnuFormatter(std::vector<std::string> usage) : usage_(std::move(usage)) {}

  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    std::string out;
    for (size_t i = 0; i < usage_.size(); ++i) out += (i == 0 ? "Usage: " : "  or:  ") + usage_[i] + "\n";
    out += Wrap(app->get_description(), 0, 0, kHelpWidth) + "\n\nOptions:\n";
    std::vector<const CLI::Option*> opts =
        app->get_options([](const CLI::Option* o) { return o->nonpositional(); });
    // GNU lists --help and --version last.
    std::stable_partition(opts.begin(), opts.end(), [app](const CLI::Option* o) {
      return o != app->get_help_ptr() && o != app->get_version_ptr();
    });
    for (const CLI::Option* o : opts) {
      std::string left = "  ";
      const auto& shorts = o->get_snames();
      left += shorts.empty() ? "    " : "-" + shorts.front() + ", ";
      bool first = true;
      for (const std::string& l : o->get_lnames()) {
        left += (first ? "--" : ", --") + l;
        first = false;
      }
      // Flags have no value name; every option with a value has one.
      if (!o->get_type_name().empty()) left += "=" + o->get_type_name();
      if (left.size() + 2 > kHelpColumn) {
        out += left + "\n" + std::string(kHelpColumn, ' ');
      } else {
        out += left + std::string(kHelpColumn - left.size(), ' ');
      }
      out += Wrap(o->get_description(), kHelpColumn, kHelpColumn, kHelpWidth) + "\n";
    }
    if (!app->get_footer().empty()) out += "\n" + Wrap(app->get_footer(), 0, 0, kHelpWidth) + "\n";
    return out;
  }

 private:
  const std::vector<std::string> usage_;
};

}  // namespace

void UseGnuHelp(CLI::App& app, std::vector<std::string> usage) {
  app.formatter(std::make_shared<GnuFormatter>(std::move(usage)));
}

void AddLocationOptions(CLI::App& app, LocationArgs& args) {
  app.add_option("--image", args.image,
                 "Image file or unmounted block device holding the filesystem")
      ->type_name("IMG");
  app.add_option("--image-offset", args.image_offset,
                 "Byte offset of the filesystem inside the image (K/M/G/T suffixes)")
      ->transform(SizeValidator())
      ->type_name("BYTES");
  app.add_option("--partition", args.partition,
                 "The filesystem is in partition N of the image's partition table (MBR or "
                 "GPT; numbered as fdisk numbers them)")
      ->type_name("N");
  app.add_option("--inode", args.inode, "Inode number instead of TARGET (image mode)")
      ->type_name("N");
}

namespace {

// The size in bytes of the ext2/3/4 filesystem whose superblock is at
// `offset` + 1024 in `fd`, or nullopt without one.
std::optional<uint64_t> FilesystemBytes(int fd, uint64_t offset) {
  unsigned char sb[1024];
  if (::pread(fd, sb, sizeof sb, static_cast<off_t>(offset + 1024)) != sizeof sb) return std::nullopt;
  auto le32 = [&sb](size_t at) {
    return static_cast<uint32_t>(sb[at]) | static_cast<uint32_t>(sb[at + 1]) << 8 |
           static_cast<uint32_t>(sb[at + 2]) << 16 | static_cast<uint32_t>(sb[at + 3]) << 24;
  };
  if ((le32(0x38) & 0xffff) != 0xef53) return std::nullopt;
  const uint32_t log = le32(0x18);
  if (log > 6) return std::nullopt;  // blocks of at most 64 KiB
  uint64_t blocks = le32(0x4);
  constexpr uint32_t kIncompat64Bit = 0x80;
  if (le32(0x60) & kIncompat64Bit) blocks |= static_cast<uint64_t>(le32(0x150)) << 32;
  return blocks << (10 + log);
}

std::string Bytes(uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

}  // namespace

std::optional<PartitionTable> ProbePartitions(const std::string& image) {
  blkid_probe pr = blkid_new_probe_from_filename(image.c_str());
  if (pr == nullptr) return std::nullopt;
  std::optional<PartitionTable> table;
  blkid_probe_enable_superblocks(pr, 0);
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
  blkid_partlist list = nullptr;
  if (blkid_do_safeprobe(pr) == 0 && (list = blkid_probe_get_partitions(pr)) != nullptr) {
    blkid_parttable tab = blkid_partlist_get_table(list);
    const int n = blkid_partlist_numof_partitions(list);
    if (tab != nullptr && n > 0) {
      table.emplace();
      const char* type = blkid_parttable_get_type(tab);
      table->type = type != nullptr ? type : "unknown";
      const int fd = blkid_probe_get_fd(pr);
      for (int i = 0; i < n; ++i) {
        blkid_partition par = blkid_partlist_get_partition(list, i);
        if (par == nullptr) continue;
        Partition p;
        p.number = blkid_partition_get_partno(par);
        p.offset = static_cast<uint64_t>(blkid_partition_get_start(par)) * 512;
        p.size = static_cast<uint64_t>(blkid_partition_get_size(par)) * 512;
        if (const char* t = blkid_partition_get_type_string(par); t != nullptr) {
          p.type = t;
        } else {
          char code[16];
          std::snprintf(code, sizeof code, "0x%x", blkid_partition_get_type(par));
          p.type = code;
        }
        if (const char* nm = blkid_partition_get_name(par); nm != nullptr) p.name = nm;
        // What is inside: a second probe limited to the partition.
        if (blkid_probe inner = blkid_new_probe(); inner != nullptr) {
          if (blkid_probe_set_device(inner, fd, static_cast<blkid_loff_t>(p.offset),
                                     static_cast<blkid_loff_t>(p.size)) == 0) {
            blkid_probe_enable_superblocks(inner, 1);
            blkid_probe_enable_partitions(inner, 0);
            const char* fs = nullptr;
            if (blkid_do_safeprobe(inner) == 0 &&
                blkid_probe_lookup_value(inner, "TYPE", &fs, nullptr) == 0 && fs != nullptr)
              p.content = fs;
          }
          blkid_free_probe(inner);
        }
        table->partitions.push_back(std::move(p));
      }
    }
  }
  blkid_free_probe(pr);
  return table;
}

std::string PartitionHint(const std::string& tool, const CLI::App& app, const LocationArgs& args) {
  if (args.image.empty() || app.count("--image-offset") > 0 || app.count("--partition") > 0)
    return "";
  const std::string& image = args.image;
  const std::optional<PartitionTable> table = ProbePartitions(image);
  if (!table) return "";
  std::string out = tool + ": " + image + " holds a partition table (" +
                    (table->type == "dos" ? std::string("MBR") : table->type) +
                    "), not a filesystem; its partitions:\n";
  for (const Partition& p : table->partitions) {
    out += tool + ":   partition " + std::to_string(p.number) + ": type " + p.type +
           (p.name.empty() ? "" : " \"" + p.name + "\"") + ", " +
           (p.content.empty() ? "no filesystem found" : p.content) + ", at byte offset " +
           std::to_string(p.offset) + ", " + Bytes(p.size) + "\n";
  }
  out += tool + ": give --partition N (or --image-offset BYTES) to use one\n";
  return out;
}

int CheckLocation(const std::string& tool, const CLI::App& app, LocationArgs& args,
                  const std::vector<std::string>& targets) {
  const bool offset = app.count("--image-offset") > 0;
  const bool partition = app.count("--partition") > 0;
  const bool inode = app.count("--inode") > 0;
  if (args.image.empty() && offset) return UsageError(tool, "--image-offset needs --image");
  if (args.image.empty() && partition) return UsageError(tool, "--partition needs --image");
  if (offset && partition) return UsageError(tool, "give --image-offset or --partition, not both");
  if (partition && args.partition == 0)
    return UsageError(tool, "--partition 0 is invalid: partitions are numbered from 1");
  if (inode && args.inode == 0)
    return UsageError(tool, "--inode 0 is invalid: ext4 inodes start at 1 (the root directory is 2)");
  if (args.image.empty() && inode) return UsageError(tool, "--inode needs --image");
  if (inode && !targets.empty()) return UsageError(tool, "give TARGET or --inode, not both");
  if (!inode && targets.empty()) return UsageError(tool, "no TARGET given");
  if (args.image.empty()) {
    for (const std::string& t : targets) {
      struct stat st;
      if (::stat(t.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
        return UsageError(tool, t + " is a block device: give it with --image and name a file "
                                "inside it as TARGET");
      }
    }
  }
  if (!partition && !offset) return -1;
  const std::optional<PartitionTable> table = ProbePartitions(args.image);
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: %s: %s\n", tool.c_str(), args.image.c_str(), why.c_str());
    return kExitFailure;
  };
  // The library keeps every access inside the filesystem (and the image);
  // the filesystem must then lie inside its partition, or writes could land
  // in the next one or in the table's backup: for --partition, and for an
  // --image-offset that falls inside a partition.
  auto fits = [&](const Partition& p, uint64_t start) -> int {
    const int fd = ::open(args.image.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(std::strerror(errno));
    const std::optional<uint64_t> fs = FilesystemBytes(fd, start);
    ::close(fd);
    const uint64_t room = p.offset + p.size - start;
    if (fs && *fs > room) {
      return fail("the filesystem at byte offset " + std::to_string(start) + " is " + Bytes(*fs) +
                  ", larger than what partition " + std::to_string(p.number) + " holds from there (" +
                  Bytes(room) + "); nothing done");
    }
    return -1;
  };
  if (offset) {
    if (!table) return -1;
    for (const Partition& p : table->partitions) {
      if (args.image_offset >= p.offset && args.image_offset < p.offset + p.size)
        return fits(p, args.image_offset);
    }
    return -1;
  }
  if (!table) return fail("no partition table found (--partition " + std::to_string(args.partition) + ")");
  const Partition* found = nullptr;
  std::string numbers;
  for (const Partition& p : table->partitions) {
    if (p.number == static_cast<int>(args.partition)) found = &p;
    numbers += (numbers.empty() ? "" : ", ") + std::to_string(p.number);
  }
  if (found == nullptr)
    return fail("no partition " + std::to_string(args.partition) + " (it has " + numbers + ")");
  if (int rc = fits(*found, found->offset); rc >= 0) return rc;
  args.image_offset = found->offset;
  return -1;
}

namespace {

constexpr unsigned kLoopMajor = 7;

// The backing file of loop device `rdev`, from sysfs (the path it shows is
// then identified by stat, so a rename or a second link still matches; a
// deleted backing file cannot be named and is not found).
std::optional<std::pair<dev_t, ino_t>> LoopBacking(dev_t rdev) {
  if (major(rdev) != kLoopMajor) return std::nullopt;
  std::ifstream in("/sys/dev/block/" + std::to_string(major(rdev)) + ":" +
                   std::to_string(minor(rdev)) + "/loop/backing_file");
  std::string path;
  if (!std::getline(in, path) || path.empty()) return std::nullopt;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || S_ISBLK(st.st_mode)) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

}  // namespace

FileId IdOf(const struct stat& st) {
  if (S_ISBLK(st.st_mode)) return BlockDeviceId(st.st_rdev);
  FileId id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  return id;
}

FileId BlockDeviceId(dev_t rdev) {
  FileId id;
  id.block = true;
  id.dev = rdev;
  id.backing = LoopBacking(rdev);
  return id;
}

std::string SameData(const FileId& a, const std::string& a_name, const FileId& b,
                     const std::string& b_name) {
  const std::string qa = "'" + a_name + "'", qb = "'" + b_name + "'";
  if (a.block == b.block) {
    if (a.dev == b.dev && (a.block || a.ino == b.ino)) return qa + " and " + qb + " are the same file";
    if (a.block && a.backing && a.backing == b.backing)
      return qa + " and " + qb + " are loop devices over the same file";
    return "";
  }
  const FileId& dev = a.block ? a : b;
  const FileId& file = a.block ? b : a;
  if (dev.backing && *dev.backing == std::make_pair(file.dev, file.ino)) {
    return a.block ? qa + " is a loop device over " + qb : qb + " is a loop device over " + qa;
  }
  return "";
}

namespace {

// "/dev/loop3" for device number 7:3 (sysfs's DEVNAME), else "device 7:3".
std::string DeviceName(dev_t rdev) {
  const std::string mm = std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
  std::ifstream in("/sys/dev/block/" + mm + "/uevent");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) return "/dev/" + line.substr(8);
  }
  return "device " + mm;
}

}  // namespace

ProtectedFiles ProtectFiles(const std::string& image, const std::string& target) {
  ProtectedFiles p;
  struct stat st;
  if (!image.empty()) {
    if (::stat(image.c_str(), &st) == 0) p.files.emplace_back(IdOf(st), image);
  } else if (::stat(target.c_str(), &st) == 0) {
    p.files.emplace_back(IdOf(st), target);
    // Writing the device under a mounted filesystem corrupts it.
    p.files.emplace_back(BlockDeviceId(st.st_dev), DeviceName(st.st_dev));
    p.target_ino = st.st_ino;
  }
  return p;
}

std::string Conflict(const ProtectedFiles& p, const struct stat& other, const std::string& name) {
  const FileId id = IdOf(other);
  for (const auto& [file, file_name] : p.files) {
    std::string why = SameData(id, name, file, file_name);
    if (!why.empty()) return why;
  }
  return "";
}

namespace {

std::atomic<int> g_stop_signal{0};
int g_stop_pipe[2] = {-1, -1};

void OnStopSignal(int sig) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, sig)) {
    // A second signal: the user insists (the first may be stuck behind a
    // blocking open or a stalled device). Die of it, as without a handler.
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  const int saved = errno;
  const char c = 0;
  // Non-blocking: a full pipe already wakes every waiter.
  (void)!::write(g_stop_pipe[1], &c, 1);
  errno = saved;
}

}  // namespace

void InstallStopHandlers() {
  if (g_stop_pipe[0] < 0 && ::pipe2(g_stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return;
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: the library's system calls (in its own threads too) go on;
  // the tools' own waits on input and output poll the pipe instead.
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int StopSignal() { return g_stop_signal.load(std::memory_order_relaxed); }

bool WaitReady(int fd, short events) {
  for (;;) {
    if (StopSignal() != 0) return false;
    struct pollfd p[2] = {{fd, events, 0}, {g_stop_pipe[0], POLLIN, 0}};
    const int n = ::poll(p, g_stop_pipe[0] >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return true;  // let the read or write itself report the problem
    }
    if (StopSignal() != 0) return false;
    // POLLERR/POLLHUP/POLLNVAL too: the read or write then says what it is.
    if (p[0].revents != 0) return true;
  }
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
  }
  return "a signal";
}

}  // namespace ext4dio::cli
