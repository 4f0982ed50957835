#include "util/log.h"

#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace zcoll::log {
namespace {

// The host's name, read once (it names the machine in every line). Never destroyed, like the
// mutex below: threads of groups still alive at exit may log after static destructors ran.
const std::string& hostName() {
  static const std::string* name = [] {
    char buf[256] = {};
    return new std::string(::gethostname(buf, sizeof buf - 1) == 0 ? buf : "?");
  }();
  return *name;
}

}  // namespace

const char* levelName(Level level) {
  switch (level) {
    case Level::kWarn: return "WARN";
    case Level::kInfo: return "INFO";
    case Level::kTrace: return "TRACE";
  }
  return "?";
}

bool parseLevel(std::string_view name, Level* out) {
  for (Level l : {Level::kWarn, Level::kInfo, Level::kTrace})
    if (name == levelName(l)) {
      *out = l;
      return true;
    }
  return false;
}

void write(Level level, int rank, std::string_view message) {
  // The pid is read per line: a forked child logs under its own.
  std::string line = "zcoll " + hostName() + ":" + std::to_string(::getpid());
  if (rank >= 0) line += " [rank " + std::to_string(rank) + "]";
  line += " ";
  line += levelName(level);
  line += ": ";
  line += message;
  line += '\n';
  // One write per line where it fits (a pipe takes up to PIPE_BUF bytes at once, so lines of
  // other processes on the same pipe do not cut into it); the mutex keeps this process's lines
  // whole whatever their length. Nothing to do if stderr fails: logging must never throw.
  static std::mutex* mutex = new std::mutex;
  std::lock_guard<std::mutex> lock(*mutex);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace zcoll::log
