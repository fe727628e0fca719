// Run folder creation and atomic writes (POSIX: open, fsync, rename).
#include "trainer/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace kbit {
namespace fs = std::filesystem;

namespace {

std::string errno_text() {
  return std::strerror(errno);
}

// Writes all of `text` to fd; false on error (errno set).
bool write_all(int fd, const std::string& text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    p += n;
    left -= size_t(n);
  }
  return true;
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the rename itself has happened
  ::fsync(fd);
  ::close(fd);
}

bool is_empty_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec) && !ec;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  const fs::path target(path);
  std::string tmp_name = ".";
  tmp_name += target.filename().string();
  tmp_name += ".tmp." + std::to_string(::getpid());
  const std::string tmp = (target.parent_path() / tmp_name).string();

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  KBIT_CHECK(fd >= 0, "[write_file_atomic] cannot create ", tmp, ": ",
             errno_text());
  bool ok = write_all(fd, text) && ::fsync(fd) == 0;
  std::string error = ok ? "" : errno_text();
  ok = (::close(fd) == 0) && ok;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    error = errno_text();
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw Error(str("[write_file_atomic] cannot write ", path, ": ", error));
  }
  fsync_dir(target.parent_path());
}

void check_out_dir(const std::string& out) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  KBIT_USER_CHECK(fs::is_directory(out, ec), "--out ", out,
                  ": expected a new or empty folder, got a file");
  KBIT_USER_CHECK(is_empty_dir(out), "--out ", out,
                  ": expected a new or empty folder, got a folder with files "
                  "(an earlier run?); remove it or choose another --out");
}

std::string create_run_dir(const std::string& name, const std::string& out) {
  std::error_code ec;
  if (!out.empty()) {
    check_out_dir(out);
    fs::create_directories(out, ec);
    KBIT_USER_CHECK(!ec, "--out ", out,
                    ": cannot create the folder: ", ec.message());
    check_out_dir(out);
    return out;
  }

  fs::create_directories("runs", ec);
  KBIT_USER_CHECK(!ec, "runs: cannot create the folder: ", ec.message());
  for (int k = 1;; ++k) {
    std::string dir = "runs/" + name;
    if (k > 1) dir += str("-", k);
    // create_directory is atomic: false means the folder exists already.
    if (fs::create_directory(dir, ec)) return dir;
    KBIT_USER_CHECK(!ec, dir, ": cannot create the folder: ", ec.message());
  }
}

}  // namespace kbit
