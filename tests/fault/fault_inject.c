/* Deterministic kill points for the kill-and-resume tests (docs/reliability.md).
 *
 * An LD_PRELOAD library: with CTOK_FAULT="WHEN:OP:PATTERN:N" in the environment, the
 * process SIGKILLs itself at the N-th call (1-based, counted in this process) of OP on a
 * path that contains PATTERN:
 *   WHEN     before | after | torn   ("after": the call is made first; "torn", for write
 *            only: half of the bytes are written, then the kill, as when a process dies in
 *            the middle of a large write)
 *   OP       write (write, writev, pwrite: the path of the descriptor), fsync (fsync,
 *            fdatasync), rename (rename, renameat, renameat2: the destination path),
 *            unlink (unlink, unlinkat, remove)
 *   PATTERN  a substring of the path; a trailing '$' anchors it at the end of the path
 * Each kill is logged on stderr as "ctok-fault: SIGKILL before write #2 on <path>".
 * Without CTOK_FAULT nothing changes. Only calls that go through the dynamic symbol are
 * seen (ctok's own I/O and libstdc++ streams; not stdio's internal writes).
 *
 *   cc -shared -fPIC -O1 -o libctok_fault.so fault_inject.c -ldl
 *   CTOK_FAULT=after:rename:.ckpt:1 LD_PRELOAD=./libctok_fault.so ctok-learn ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_NONE, OP_WRITE, OP_FSYNC, OP_RENAME, OP_UNLINK };

static int g_op = OP_NONE, g_after = 0, g_torn = 0, g_anchored = 0;
static long g_n = 0;
static char g_pattern[PATH_MAX];
static atomic_long g_count;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void parse_spec(void) {
  const char* spec = getenv("CTOK_FAULT");
  if (spec == NULL || *spec == '\0') return;
  char buf[PATH_MAX + 64];
  snprintf(buf, sizeof buf, "%s", spec);
  char* when = strtok(buf, ":");
  char* op = strtok(NULL, ":");
  char* pattern = strtok(NULL, ":");
  char* n = strtok(NULL, ":");
  if (when == NULL || op == NULL || pattern == NULL || n == NULL) goto bad;
  if (strcmp(when, "after") == 0) g_after = 1;
  else if (strcmp(when, "torn") == 0) g_torn = 1;
  else if (strcmp(when, "before") != 0) goto bad;
  if (strcmp(op, "write") == 0) g_op = OP_WRITE;
  else if (strcmp(op, "fsync") == 0) g_op = OP_FSYNC;
  else if (strcmp(op, "rename") == 0) g_op = OP_RENAME;
  else if (strcmp(op, "unlink") == 0) g_op = OP_UNLINK;
  else goto bad;
  snprintf(g_pattern, sizeof g_pattern, "%s", pattern);
  const size_t plen = strlen(g_pattern);
  if (plen > 0 && g_pattern[plen - 1] == '$') {
    g_pattern[plen - 1] = '\0';
    g_anchored = 1;
  }
  if (g_torn && g_op != OP_WRITE) goto bad;
  g_n = strtol(n, NULL, 10);
  if (g_n < 1) goto bad;
  return;
bad:
  fprintf(stderr, "ctok-fault: bad CTOK_FAULT \"%s\" (expected WHEN:OP:PATTERN:N)\n", spec);
  _exit(125);
}

__attribute__((constructor)) static void init(void) { pthread_once(&g_once, parse_spec); }

static void say(const char* text) {
  /* straight to the kernel: write() itself may be the interposed call */
  syscall(SYS_write, 2, text, strlen(text));
}

static void die(const char* when, const char* op, long n, const char* path) {
  char msg[PATH_MAX + 128];
  snprintf(msg, sizeof msg, "ctok-fault: SIGKILL %s %s #%ld on %s\n", when, op, n, path);
  say(msg);
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

static int matches(const char* path) {
  if (path == NULL) return 0;
  if (!g_anchored) return strstr(path, g_pattern) != NULL;
  const size_t n = strlen(path), m = strlen(g_pattern);
  return n >= m && strcmp(path + n - m, g_pattern) == 0;
}

/* 0: no kill; 1: kill before; 2: kill after; 3: torn write. Counts matching calls. */
static int check(int op, const char* path, long* which) {
  pthread_once(&g_once, parse_spec);
  if (g_op != op || !matches(path)) return 0;
  const long k = atomic_fetch_add(&g_count, 1) + 1;
  if (k != g_n) return 0;
  *which = k;
  return g_torn ? 3 : g_after ? 2 : 1;
}

static void fd_path(int fd, char* out, size_t len) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, len - 1);
  out[n > 0 ? n : 0] = '\0';
}

static int fd_check(int op, int fd, char* path, long* which) {
  pthread_once(&g_once, parse_spec);
  if (g_op != op) return 0;
  fd_path(fd, path, PATH_MAX);
  return check(op, path, which);
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void* buf, size_t count) {
  char path[PATH_MAX];
  long k = 0;
  const int act = fd_check(OP_WRITE, fd, path, &k);
  if (act == 1) die("before", "write", k, path);
  if (act == 3) {
    REAL(write)(fd, buf, count / 2);
    die("torn", "write", k, path);
  }
  ssize_t r = REAL(write)(fd, buf, count);
  if (act == 2) die("after", "write", k, path);
  return r;
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  char path[PATH_MAX];
  long k = 0;
  const int act = fd_check(OP_WRITE, fd, path, &k);
  if (act == 1 || (act == 3 && iovcnt <= 1)) die("before", "write", k, path);
  if (act == 3) {
    REAL(writev)(fd, iov, iovcnt / 2);
    die("torn", "write", k, path);
  }
  ssize_t r = REAL(writev)(fd, iov, iovcnt);
  if (act == 2) die("after", "write", k, path);
  return r;
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  char path[PATH_MAX];
  long k = 0;
  const int act = fd_check(OP_WRITE, fd, path, &k);
  if (act == 1) die("before", "write", k, path);
  if (act == 3) {
    REAL(pwrite)(fd, buf, count / 2, offset);
    die("torn", "write", k, path);
  }
  ssize_t r = REAL(pwrite)(fd, buf, count, offset);
  if (act == 2) die("after", "write", k, path);
  return r;
}

int fsync(int fd) {
  char path[PATH_MAX];
  long k = 0;
  const int act = fd_check(OP_FSYNC, fd, path, &k);
  if (act == 1) die("before", "fsync", k, path);
  int r = REAL(fsync)(fd);
  if (act == 2) die("after", "fsync", k, path);
  return r;
}

int fdatasync(int fd) {
  char path[PATH_MAX];
  long k = 0;
  const int act = fd_check(OP_FSYNC, fd, path, &k);
  if (act == 1) die("before", "fsync", k, path);
  int r = REAL(fdatasync)(fd);
  if (act == 2) die("after", "fsync", k, path);
  return r;
}

int rename(const char* from, const char* to) {
  long k = 0;
  const int act = check(OP_RENAME, to, &k);
  if (act == 1) die("before", "rename", k, to);
  int r = REAL(rename)(from, to);
  if (act == 2) die("after", "rename", k, to);
  return r;
}

int renameat(int fromfd, const char* from, int tofd, const char* to) {
  long k = 0;
  const int act = check(OP_RENAME, to, &k);
  if (act == 1) die("before", "rename", k, to);
  int r = REAL(renameat)(fromfd, from, tofd, to);
  if (act == 2) die("after", "rename", k, to);
  return r;
}

int renameat2(int fromfd, const char* from, int tofd, const char* to, unsigned int flags) {
  long k = 0;
  const int act = check(OP_RENAME, to, &k);
  if (act == 1) die("before", "rename", k, to);
  int r = REAL(renameat2)(fromfd, from, tofd, to, flags);
  if (act == 2) die("after", "rename", k, to);
  return r;
}

int unlink(const char* path) {
  long k = 0;
  const int act = check(OP_UNLINK, path, &k);
  if (act == 1) die("before", "unlink", k, path);
  int r = REAL(unlink)(path);
  if (act == 2) die("after", "unlink", k, path);
  return r;
}

int unlinkat(int dirfd, const char* path, int flags) {
  long k = 0;
  const int act = check(OP_UNLINK, path, &k);
  if (act == 1) die("before", "unlink", k, path);
  int r = REAL(unlinkat)(dirfd, path, flags);
  if (act == 2) die("after", "unlink", k, path);
  return r;
}

int remove(const char* path) {
  long k = 0;
  const int act = check(OP_UNLINK, path, &k);
  if (act == 1) die("before", "unlink", k, path);
  int r = REAL(remove)(path);
  if (act == 2) die("after", "unlink", k, path);
  return r;
}
