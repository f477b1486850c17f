// Board glue for the firmware as a host program (PlatformIO env `native`).
//
// Link: a pseudo-terminal. The program prints `HIL_PORT /dev/pts/N` as its
// first line on stdout and serves the protocol on that port, so a host opens
// it like a USB serial port (pyserial, `hil validate --port /dev/pts/N`).
// With --stdio the protocol runs on stdin/stdout instead (pipes, tests).
// Time: CLOCK_MONOTONIC; no cycle counter. Halt: exit(code).
//
//   firmware [--stdio] [--link PATH]
//     --link PATH   also make PATH a symlink to the pseudo-terminal
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 600
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "hil_board.h"

namespace {

bool g_stdio = false;
const char* g_link_path = nullptr;
int g_in = -1;
int g_out = -1;
int g_slave =
    -1;  // kept open: the master never sees a hang-up between host sessions

void Die(const char* what) {
  fprintf(stderr, "native firmware: %s: %s\n", what, strerror(errno));
  exit(2);
}

void RemoveLink() {
  if (g_link_path != nullptr) unlink(g_link_path);
}

void OnSignal(int) {
  RemoveLink();
  _exit(0);
}

void Usage(const char* argv0) {
  fprintf(
      stderr,
      "usage: %s [--stdio] [--link PATH]\n"
      "  Serves the tinyhil protocol on a new pseudo-terminal, whose path it "
      "prints\n"
      "  first on stdout as `HIL_PORT /dev/pts/N`.\n"
      "  --stdio      use stdin/stdout as the link instead\n"
      "  --link PATH  also create PATH as a symlink to the pseudo-terminal\n",
      argv0);
}

}  // namespace

extern "C" void HilBoardArgs(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--stdio") == 0) {
      g_stdio = true;
    } else if (strcmp(argv[i], "--link") == 0 && i + 1 < argc) {
      g_link_path = argv[++i];
    } else {
      Usage(argv[0]);
      exit(strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ? 0
                                                                        : 2);
    }
  }
}

namespace hil {
namespace board {

void Init() {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  if (g_stdio) {
    g_in = STDIN_FILENO;
    g_out = STDOUT_FILENO;
    return;
  }
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
    Die("cannot create a pseudo-terminal");
  const char* name = ptsname(master);
  if (name == nullptr) Die("ptsname");
  g_slave = open(name, O_RDWR | O_NOCTTY);
  if (g_slave < 0) Die("cannot open the pseudo-terminal");
  termios tio;
  if (tcgetattr(g_slave, &tio) == 0) {
    cfmakeraw(
        &tio);  // binary frames: no echo, no line editing, no CR/LF mapping
    tcsetattr(g_slave, TCSANOW, &tio);
  }
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
  g_in = g_out = master;
  if (g_link_path != nullptr) {
    unlink(g_link_path);
    if (symlink(name, g_link_path) != 0)
      Die("cannot create the --link symlink");
    atexit(RemoveLink);
  }
  printf("HIL_PORT %s\n", name);
  fflush(stdout);
}

size_t Read(uint8_t* buffer, size_t capacity) {
  // Wait a little for data instead of spinning: the loop has nothing else to
  // do.
  pollfd p{g_in, POLLIN, 0};
  if (poll(&p, 1, 20) <= 0) return 0;
  const ssize_t n = read(g_in, buffer, capacity);
  if (n > 0) return static_cast<size_t>(n);
  if (n == 0 && g_stdio) exit(0);  // the host closed stdin
  if (n < 0 && errno != EAGAIN && errno != EINTR && errno != EIO) Die("read");
  return 0;
}

void Write(const uint8_t* data, size_t length) {
  while (length > 0) {
    const ssize_t n = write(g_out, data, length);
    if (n > 0) {
      data += n;
      length -= static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd p{g_out, POLLOUT, 0};
      poll(&p, 1, 100);
    } else {
      Die("write");
    }
  }
}

uint32_t MicrosNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint32_t>(static_cast<uint64_t>(ts.tv_sec) * 1000000u +
                               static_cast<uint64_t>(ts.tv_nsec) / 1000u);
}

uint64_t CyclesNow() { return 0; }
bool HasCycleCounter() { return false; }
uint32_t CpuHz() { return 0; }
const char* BoardId() { return HIL_BOARD_ID; }

void Halt(int code) {
  fflush(stdout);
  exit(code);
}

}  // namespace board
}  // namespace hil
