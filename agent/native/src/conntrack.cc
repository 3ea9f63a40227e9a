// Conntrack lookups over ctnetlink (conntrack.h; the messages: ctnetlink.h). A batch goes in chunks:
// one sendto() of many IPCTNL_MSG_CT_GET messages, which the kernel answers
// while sendto() runs (netlink to the kernel is synchronous), one message per
// request (the entry; or NLMSG_ERROR, ENOENT when there is none) into the
// socket's receive queue; the queue is then drained and the answers matched
// by sequence number. An answer that did not fit the queue is lost (the next
// recv() fails with ENOBUFS, or the request's own answer is an ENOBUFS
// error): those requests go again, in smaller chunks.
#include "conntrack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ctnetlink.h"
#include "errors.h"

namespace podmeter {
namespace {

using ctnetlink::kMapped;
using ctnetlink::Tuple;

// Requests per sendto() at first; halved after a chunk whose answers did not all arrive.
constexpr size_t kFirstChunk = 256;
// The receive queue asked for: SO_RCVBUFFORCE (CAP_NET_ADMIN), else SO_RCVBUF (capped at net.core.rmem_max).
constexpr int kReceiveQueue = 4 << 20;
// One recv(): a single answer (an entry is well under a page).
constexpr size_t kReceiveBytes = 64 << 10;
// Chunks in a row without a single answer before the lookup gives up.
constexpr int kMaxStalls = 3;
// How long a chunk waits for answers that are neither there nor reported lost.
constexpr int kWaitMs = 100;

const char* const kNeedsNetAdmin = "the agent needs CAP_NET_ADMIN to read the node's conntrack table";

// A tuple record of conntrackReplies' input (conntrack.h).
Tuple ReadTuple(const uint8_t* record) {
  Tuple t;
  memcpy(t.src, record, 16);
  memcpy(t.dst, record + 16, 16);
  memcpy(&t.srcPort, record + 32, 2);
  memcpy(&t.dstPort, record + 34, 2);
  t.proto = record[36];
  return t;
}

// The answer record (conntrack.h) for `asked` from its entry: who sends in the other direction.
void WriteAnswer(uint8_t* out, const Tuple& asked, const ctnetlink::Entry& e) {
  const Tuple& other = asked == e.reply ? e.orig : e.reply;
  memcpy(out, other.src, 16);
  memcpy(out + 16, &other.srcPort, 2);
  out[18] = 1;
  out[19] = 0;
  memcpy(out + 20, e.id, 4);
}

void ThrowLookupError(Napi::Env env, int err, const char* syscall, const std::string& netns) {
  ThrowSystemError(env, err, syscall,
                   netns.empty() ? "look up conntrack entries" : "look up conntrack entries in network namespace", netns,
                   err == EPERM ? kNeedsNetAdmin : "");
}

// Looks up `n` tuple records at `tuples`, writing `n` answer records to
// `out`. `netns` names the namespace for error messages (empty: not known).
// False with a JS exception pending.
bool Lookup(Napi::Env env, int fd, const uint8_t* tuples, size_t n, uint8_t* out, const std::string& netns) {
  // Sequence numbers unique in the process: an answer left over from an
  // earlier call that threw is never taken for one of this call's.
  static std::atomic<uint32_t> nextSeq{1};
  std::vector<size_t> pending(n);
  for (size_t i = 0; i < n; i++) pending[i] = i;
  std::vector<uint8_t> request;
  std::vector<uint8_t> reply(kReceiveBytes);
  std::vector<Tuple> asked;
  std::vector<uint8_t> done;
  size_t chunk = kFirstChunk;
  int stalls = 0;
  while (!pending.empty()) {
    size_t count = std::min(chunk, pending.size());
    uint32_t base = nextSeq.fetch_add(static_cast<uint32_t>(count));
    request.clear();
    asked.resize(count);
    for (size_t k = 0; k < count; k++) {
      asked[k] = ReadTuple(tuples + pending[k] * kConntrackTupleBytes);
      ctnetlink::AppendGet(request, asked[k], base + static_cast<uint32_t>(k));
    }
    done.assign(count, 0);

    sockaddr_nl kernel = {};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do {
      sent = sendto(fd, request.data(), request.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
      ThrowLookupError(env, errno, "sendto", netns);
      return false;
    }

    size_t answered = 0;
    bool lost = false;  // the kernel reported an answer it could not queue
    bool waited = false;
    while (answered < count) {
      ssize_t got = recv(fd, reply.data(), reply.size(), MSG_DONTWAIT);
      if (got < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == ENOBUFS) {
          lost = true;
          continue;
        }
        if (err != EAGAIN && err != EWOULDBLOCK) {
          ThrowLookupError(env, err, "recv", netns);
          return false;
        }
        // Nothing queued: what is missing was lost, or (not on the kernels
        // seen) is still coming.
        if (lost || waited) break;
        waited = true;
        pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, kWaitMs) <= 0) break;
        continue;
      }
      size_t off = 0;
      size_t size = static_cast<size_t>(got);
      while (off + NLMSG_HDRLEN <= size) {
        nlmsghdr h;
        memcpy(&h, reply.data() + off, sizeof h);
        if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > size - off) break;
        const uint8_t* payload = reply.data() + off + NLMSG_HDRLEN;
        size_t payloadLen = h.nlmsg_len - NLMSG_HDRLEN;
        off += NLMSG_ALIGN(h.nlmsg_len);
        uint32_t k = h.nlmsg_seq - base;
        if (k >= count || done[k]) continue;  // not this chunk's (an earlier call's) or already answered
        uint8_t* answer = out + pending[k] * kConntrackAnswerBytes;
        if (h.nlmsg_type == NLMSG_ERROR) {
          int error = 0;
          if (payloadLen >= sizeof error) memcpy(&error, payload, sizeof error);
          if (error == -ENOBUFS) {
            lost = true;
            continue;
          }
          if (error != -ENOENT) {
            ThrowLookupError(env, error < 0 ? -error : EPROTO, "netlink(IPCTNL_MSG_CT_GET)", netns);
            return false;
          }
          memset(answer, 0, kConntrackAnswerBytes);
        } else if (h.nlmsg_type == ctnetlink::kCtNew) {
          ctnetlink::Entry e;
          if (!ctnetlink::ParseEntry(payload, payloadLen, &e)) {
            ThrowSystemError(env, EPROTO, "netlink(IPCTNL_MSG_CT_GET)", "read a conntrack entry", "", "an answer without both tuples");
            return false;
          }
          WriteAnswer(answer, asked[k], e);
        } else {
          continue;
        }
        done[k] = 1;
        answered++;
      }
    }

    // What was not answered goes again, first, in smaller chunks.
    std::vector<size_t> next;
    next.reserve(pending.size() - answered);
    for (size_t k = 0; k < count; k++) {
      if (!done[k]) next.push_back(pending[k]);
    }
    if (answered < count) chunk = std::max<size_t>(1, count / 2);
    if (answered == 0) {
      if (++stalls == kMaxStalls) {
        ThrowSystemError(env, lost ? ENOBUFS : ETIMEDOUT, "recv", "look up conntrack entries: no answer to " +
                                                                      std::to_string(count) + " requests " +
                                                                      std::to_string(kMaxStalls) + " times in a row");
        return false;
      }
    } else {
      stalls = 0;
    }
    next.insert(next.end(), pending.begin() + static_cast<ptrdiff_t>(count), pending.end());
    pending.swap(next);
  }
  return true;
}

struct Opened {
  int fd;
  int err;
  const char* syscall;
};

Opened OpenSocket() {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return {-1, errno, "socket(AF_NETLINK, NETLINK_NETFILTER)"};
  int one = 1;
  // Errors without a copy of the request: more answers fit the queue.
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  int size = kReceiveQueue;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  return {fd, 0, nullptr};
}

struct InNetns {
  int nsFd;
  Opened result;
};

// A thread of its own enters the namespace and makes the socket there (a
// socket stays in the namespace it was made in); the caller's thread never
// leaves its own namespace, so there is nothing to restore, even on error.
void* OpenInNetns(void* arg) {
  auto* job = static_cast<InNetns*>(arg);
  if (setns(job->nsFd, CLONE_NEWNET) != 0) {
    job->result = {-1, errno, "setns"};
  } else {
    job->result = OpenSocket();
  }
  return nullptr;
}

// True when `fd` is a NETLINK_NETFILTER socket; otherwise a JS exception is pending.
bool CheckNetfilterSocket(Napi::Env env, const char* fn, int fd) {
  int domain = 0, protocol = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    int err = errno;
    if (err == ENOTSOCK) {
      ThrowTypeError(env, std::string(fn) + ": fd " + std::to_string(fd) + " is not a socket (conntrackOpen gives a netlink socket)");
    } else {
      ThrowSystemError(env, err, "getsockopt(SO_DOMAIN)", std::string(fn) + ": describe fd " + std::to_string(fd));
    }
    return false;
  }
  len = sizeof protocol;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) {
    ThrowSystemError(env, errno, "getsockopt(SO_PROTOCOL)", std::string(fn) + ": describe fd " + std::to_string(fd));
    return false;
  }
  if (domain != AF_NETLINK || protocol != NETLINK_NETFILTER) {
    ThrowTypeError(env, std::string(fn) + ": fd " + std::to_string(fd) + " is a socket of family " + std::to_string(domain) +
                            ", protocol " + std::to_string(protocol) + ", not a NETLINK_NETFILTER socket (conntrackOpen's)");
    return false;
  }
  return true;
}

}  // namespace

Napi::Value ConntrackOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!(info[0].IsUndefined() || (info[0].IsString() && !info[0].As<Napi::String>().Utf8Value().empty()))) {
    ThrowTypeError(env, "conntrackOpen(netnsPath?: string): the path must be a non-empty string");
    return env.Undefined();
  }
  std::string netns = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (netns.find('\0') != std::string::npos) {
    ThrowTypeError(env, "conntrackOpen: the netns path contains a NUL byte");
    return env.Undefined();
  }
  Opened opened;
  if (netns.empty()) {
    opened = OpenSocket();
  } else {
    int nsFd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsFd < 0) {
      ThrowSystemError(env, errno, "open", "open network namespace", netns);
      return env.Undefined();
    }
    InNetns job = {nsFd, {-1, 0, nullptr}};
    pthread_t thread;
    int rc = pthread_create(&thread, nullptr, OpenInNetns, &job);
    if (rc == 0) pthread_join(thread, nullptr);
    close(nsFd);
    if (rc != 0) {
      ThrowSystemError(env, rc, "pthread_create", "start a thread to enter network namespace", netns);
      return env.Undefined();
    }
    opened = job.result;
  }
  if (opened.fd < 0) {
    bool entering = strcmp(opened.syscall, "setns") == 0;
    std::string detail;
    if (entering && opened.err == EINVAL) detail = "not a network namespace (give /proc/PID/ns/net or /run/netns/NAME)";
    if (entering && opened.err == EPERM) detail = "the agent needs CAP_SYS_ADMIN to enter another network namespace";
    ThrowSystemError(env, opened.err, opened.syscall,
                     entering             ? "enter network namespace"
                     : netns.empty() ? "open a conntrack netlink socket"
                                     : "open a conntrack netlink socket in network namespace",
                     netns, detail);
    return env.Undefined();
  }
  // One lookup (of a tuple no flow has) now: no permission shows here, not at the first real lookup.
  uint8_t probe[kConntrackTupleBytes] = {};
  memcpy(probe, kMapped, 12);
  memcpy(probe + 16, kMapped, 12);
  probe[36] = IPPROTO_UDP;
  uint8_t answer[kConntrackAnswerBytes];
  if (!Lookup(env, opened.fd, probe, 1, answer, netns)) {
    close(opened.fd);
    return env.Undefined();
  }
  return Napi::Number::New(env, opened.fd);
}

Napi::Value ConntrackReplies(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(env, "conntrackReplies(fd: number, tuples: Uint8Array)");
    return env.Undefined();
  }
  double fdArg = info[0].As<Napi::Number>().DoubleValue();
  if (!(fdArg >= 0 && fdArg <= INT32_MAX && fdArg == std::floor(fdArg))) {
    ThrowTypeError(env, "conntrackReplies: fd " + Napi::Number::New(env, fdArg).ToString().Utf8Value() + " is not an fd");
    return env.Undefined();
  }
  int fd = static_cast<int>(fdArg);
  Napi::Uint8Array tuples = info[1].As<Napi::Uint8Array>();
  size_t bytes = tuples.ByteLength();
  if (bytes % kConntrackTupleBytes != 0) {
    ThrowTypeError(env, "conntrackReplies: tuples of " + std::to_string(bytes) + " bytes, not a whole number of " +
                            std::to_string(kConntrackTupleBytes) + "-byte tuples");
    return env.Undefined();
  }
  if (!CheckNetfilterSocket(env, "conntrackReplies", fd)) return env.Undefined();
  size_t n = bytes / kConntrackTupleBytes;
  Napi::Uint8Array answers = Napi::Uint8Array::New(env, n * kConntrackAnswerBytes);
  if (n > 0 && !Lookup(env, fd, tuples.Data(), n, answers.Data(), "")) return env.Undefined();
  return answers;
}

}  // namespace podmeter
