#include "testutil.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "file.h"
#include "gtest/gtest.h"

extern char** environ;

namespace ext4dio::testing {

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  for (; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return RandomBytes(n, rng);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << "writing " << path;
}

void RecordForCleanup(const std::vector<std::string>& fields) {
  const char* run_dir = std::getenv("EXT4DIO_TEST_RUN_DIR");
  if (run_dir == nullptr || *run_dir == '\0') return;
  std::string line;
  for (const std::string& f : fields) line += (line.empty() ? "" : "\t") + f;
  line += '\n';
  const std::string path = std::string(run_dir) + "/record";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    ADD_FAILURE() << "cannot record for cleanup in " << path << ": " << strerror(errno);
    return;
  }
  // One write with O_APPEND: lines of concurrent recorders never interleave.
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    ADD_FAILURE() << "short write to " << path;
  close(fd);
}

std::string FileIdentity(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return "";
  return std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)) + "\t" +
         std::to_string(st.st_ino);
}

RunResult Run(const std::vector<std::string>& argv, const std::string& input) {
  RunResult r;
  // Inside the run directory when there is one: removed with it even when
  // this process is killed while the command runs.
  const char* run_dir = std::getenv("EXT4DIO_TEST_RUN_DIR");
  std::string tmpl = (run_dir != nullptr && *run_dir != '\0' ? std::string(run_dir) : "/tmp") +
                     "/ext4dio-run-XXXXXX";
  std::vector<char> dir_template(tmpl.begin(), tmpl.end());
  dir_template.push_back('\0');
  const char* dir = mkdtemp(dir_template.data());
  if (dir == nullptr) return r;
  const std::string in_path = std::string(dir) + "/in";
  const std::string out_path = std::string(dir) + "/out";
  const std::string err_path = std::string(dir) + "/err";
  {
    std::ofstream in(in_path, std::ios::binary);
    in << input;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc == 0) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  } else {
    r.exit_code = 127;
  }
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  if (rc != 0) r.err += "spawn failed: " + std::string(strerror(rc));
  std::remove(in_path.c_str());
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  rmdir(dir);
  return r;
}

RunResult Sh(const std::string& command) { return Run({"/bin/sh", "-c", command}); }

std::string Quote(const std::string& word) {
  std::string q = "'";
  for (char c : word) {
    if (c == '\'') q += "'\\''"; else q += c;
  }
  return q + "'";
}

TempDir::TempDir() {
  struct stat st;
  std::string base = (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) ? "/dev/shm" : "/tmp";
  if (const char* t = std::getenv("EXT4DIO_TEST_TMPDIR")) base = t;
  std::string tmpl = base + "/ext4dio-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp in " << base << " failed";
    path_ = "/nonexistent";
    return;
  }
  path_ = buf.data();
  RecordForCleanup({"dir", FileIdentity(path_), path_});
}

TempDir::~TempDir() {
  // --one-file-system: a mount left inside (an unmount that failed) is
  // never emptied.
  if (path_.find("/ext4dio-test-") != std::string::npos)
    Sh("rm -rf --one-file-system " + Quote(path_));
}

std::string ToolPath(const std::string& name) {
  const char* dir = std::getenv("EXT4DIO_BUILD_DIR");
  return std::string(dir ? dir : ".") + "/tools/" + name;
}

void WriteIslands(const std::string& path, uint64_t count, uint64_t island_bytes,
                  uint64_t stride, uint32_t seed) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  std::mt19937_64 rng(seed);
  std::string buf(island_bytes, '\0');
  for (uint64_t i = 0; i < count; ++i) {
    for (auto& c : buf) c = static_cast<char>(rng() | 1);  // never all-zero
    ASSERT_EQ(pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(i * stride)),
              static_cast<ssize_t>(buf.size()));
  }
  close(fd);
}

void MakeFs(const std::string& type, const std::vector<std::string>& args,
            const std::string& src_dir, const std::string& image,
            const std::string& size) {
  std::vector<std::string> argv = {"mkfs." + type, "-q", "-F"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (!src_dir.empty()) {
    argv.push_back("-d");
    argv.push_back(src_dir);
  }
  argv.push_back(image);
  if (!size.empty()) argv.push_back(size);
  RunResult r = Run(argv);
  ASSERT_EQ(r.exit_code, 0) << "mkfs." << type << " failed: " << r.err << r.out;
}

namespace {

std::string Spec(const std::string& image, uint64_t offset) {
  return offset ? image + "?offset=" + std::to_string(offset) : image;
}

std::string Debugfs(const std::string& image, const std::string& request, uint64_t offset) {
  RunResult r = Run({"debugfs", "-R", request, Spec(image, offset)});
  EXPECT_EQ(r.exit_code, 0) << "debugfs " << request << ": " << r.err;
  return r.out;
}

}  // namespace

std::vector<Extent> DebugfsExtents(const std::string& image, const std::string& path,
                                   uint64_t offset) {
  std::vector<Extent> out;
  std::istringstream in(Debugfs(image, "ex " + path, offset));
  std::string line;
  // " 2/ 2   1/339     0 -     0  2065 -  2065      1 Uninit"
  std::regex leaf(R"(^\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*(\S*))");
  std::smatch m;
  while (std::getline(in, line)) {
    if (!std::regex_search(line, m, leaf)) continue;
    if (m[1] != m[2]) continue;  // an index entry
    Extent e;
    e.logical = std::stoull(m[3]);
    e.physical = std::stoull(m[5]);
    e.length = static_cast<uint32_t>(std::stoull(m[7]));
    e.unwritten = m[8] == "Uninit";
    out.push_back(e);
  }
  return out;
}

std::vector<Extent> DebugfsBlockMap(const std::string& image, const std::string& path,
                                    uint64_t offset) {
  std::string text = Debugfs(image, "stat " + path, offset);
  std::vector<Extent> out;
  size_t pos = text.find("BLOCKS:");
  if (pos == std::string::npos) return out;
  std::string blocks = text.substr(pos);
  // "(0-11):1234-1245", "(12):1250", "(IND):1246"
  std::regex item(R"(\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?)");
  for (auto it = std::sregex_iterator(blocks.begin(), blocks.end(), item);
       it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    uint64_t l0 = std::stoull(m[1]);
    uint64_t l1 = m[2].matched ? std::stoull(m[2]) : l0;
    uint64_t p0 = std::stoull(m[3]);
    Extent e{l0, p0, static_cast<uint32_t>(l1 - l0 + 1), false};
    if (!out.empty() && out.back().logical + out.back().length == e.logical &&
        out.back().physical + out.back().length == e.physical) {
      out.back().length += e.length;
    } else {
      out.push_back(e);
    }
  }
  return out;
}

uint64_t DebugfsInode(const std::string& image, const std::string& path, uint64_t offset) {
  std::string text = Debugfs(image, "stat " + path, offset);
  std::smatch m;
  std::regex re(R"(Inode:\s*(\d+))");
  return std::regex_search(text, m, re) ? std::stoull(m[1]) : 0;
}

uint64_t DebugfsSize(const std::string& image, const std::string& path, uint64_t offset) {
  std::string text = Debugfs(image, "stat " + path, offset);
  std::smatch m;
  std::regex re(R"(Size:\s*(\d+))");
  return std::regex_search(text, m, re) ? std::stoull(m[1]) : UINT64_MAX;
}

LoopMount::LoopMount(const std::vector<std::string>& mkfs_args, const std::string& size,
                     const std::string& mount_options) {
  image_ = dir_ / "fs.img";
  mount_point_ = dir_ / "mnt";
  // Others (e.g. an unprivileged FIEMAP-only test) must reach the mount.
  chmod(dir_.path().c_str(), 0755);
  RunResult r = Sh("truncate -s " + size + " " + Quote(image_) + " && mkdir -p " + Quote(mount_point_));
  if (r.exit_code != 0) { error_ = r.err; return; }
  std::vector<std::string> argv = {"mkfs.ext4", "-q", "-F"};
  argv.insert(argv.end(), mkfs_args.begin(), mkfs_args.end());
  argv.push_back(image_);
  r = Run(argv);
  if (r.exit_code != 0) { error_ = "mkfs: " + r.err; return; }
  // Recorded before it is attached: a crash right after losetup still
  // leaves the run's cleanup a way to find the device (by backing inode).
  const std::string identity = FileIdentity(image_);
  RecordForCleanup({"image", identity, image_});
  r = Run({"losetup", "--find", "--show", "--direct-io=on", image_});
  if (r.exit_code != 0) r = Run({"losetup", "--find", "--show", image_});
  if (r.exit_code != 0) { error_ = "losetup: " + r.err; return; }
  device_ = r.out.substr(0, r.out.find('\n'));
  RecordForCleanup({"loop", device_, identity});
  std::vector<std::string> mount = {"mount", "-t", "ext4"};
  if (!mount_options.empty()) { mount.push_back("-o"); mount.push_back(mount_options); }
  mount.push_back(device_);
  mount.push_back(mount_point_);
  RecordForCleanup({"mount", device_, mount_point_});
  r = Run(mount);
  if (r.exit_code != 0) { error_ = "mount: " + r.err; return; }
  mounted_ = true;
  chmod(mount_point_.c_str(), 0777);
  ok_ = true;
}

LoopMount::~LoopMount() {
  if (mounted_ && Run({"umount", mount_point_}).exit_code != 0) {
    Sh("sync; sleep 0.2");
    if (Run({"umount", mount_point_}).exit_code != 0) Run({"umount", "-l", mount_point_});
  }
  if (!device_.empty()) Run({"losetup", "-d", device_});
}

LoopDevice::LoopDevice(const std::string& image, bool read_only) {
  const std::string identity = FileIdentity(image);
  RecordForCleanup({"image", identity, image});
  std::vector<std::string> argv = {"losetup", "--find", "--show"};
  if (read_only) argv.push_back("--read-only");
  argv.push_back(image);
  RunResult r = Run(argv);
  if (r.exit_code != 0) {
    error_ = "losetup: " + r.err;
    return;
  }
  device_ = r.out.substr(0, r.out.find('\n'));
  RecordForCleanup({"loop", device_, identity});
}

LoopDevice::~LoopDevice() {
  if (!device_.empty()) Run({"losetup", "-d", device_});
}

OpenOptions MountedWriterOptions(const std::string& path, Os* os) {
  OpenOptions o;
  o.target.path = path;
  o.write = true;
  o.os = os;
  return o;
}

bool CanUseLoopDevices(std::string* why) {
  if (geteuid() != 0) {
    *why = "needs root (loop devices and mount)";
    return false;
  }
  struct stat st;
  if (stat("/dev/loop-control", &st) != 0) {
    *why = "no /dev/loop-control: loop devices unavailable";
    return false;
  }
  return true;
}

}  // namespace ext4dio::testing
