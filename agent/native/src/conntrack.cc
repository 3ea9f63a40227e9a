// Conntrack lookups over ctnetlink (conntrack.h). A batch goes in chunks:
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
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
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

#include "errors.h"

namespace podmeter {
namespace {

// The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

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

const uint16_t kCtGet = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
const uint16_t kCtNew = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;

const char* const kNeedsNetAdmin = "the agent needs CAP_NET_ADMIN to read the node's conntrack table";

struct Tuple {
  uint8_t src[16];   // IPv4 as IPv4-mapped
  uint8_t dst[16];
  uint16_t srcPort;  // network order
  uint16_t dstPort;
  uint8_t proto;

  bool V4() const { return memcmp(src, kMapped, 12) == 0 && memcmp(dst, kMapped, 12) == 0; }
  bool operator==(const Tuple& o) const {
    return memcmp(src, o.src, 16) == 0 && memcmp(dst, o.dst, 16) == 0 && srcPort == o.srcPort &&
           dstPort == o.dstPort && proto == o.proto;
  }
};

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

// Appends netlink messages to a buffer; attributes are padded to 4 bytes with zeros.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& buf) : buf_(buf) {}

  // One IPCTNL_MSG_CT_GET of the entry whose original (or reply) tuple is `t`.
  void Get(const Tuple& t, uint32_t seq) {
    size_t start = buf_.size();
    Reserve(sizeof(nlmsghdr));
    nfgenmsg g = {};
    g.nfgen_family = t.V4() ? AF_INET : AF_INET6;
    g.version = NFNETLINK_V0;
    Put(&g, sizeof g);
    size_t orig = Begin(CTA_TUPLE_ORIG);
    size_t ip = Begin(CTA_TUPLE_IP);
    if (t.V4()) {
      Attr(CTA_IP_V4_SRC, t.src + 12, 4);
      Attr(CTA_IP_V4_DST, t.dst + 12, 4);
    } else {
      Attr(CTA_IP_V6_SRC, t.src, 16);
      Attr(CTA_IP_V6_DST, t.dst, 16);
    }
    End(ip);
    size_t proto = Begin(CTA_TUPLE_PROTO);
    Attr(CTA_PROTO_NUM, &t.proto, 1);
    Attr(CTA_PROTO_SRC_PORT, &t.srcPort, 2);
    Attr(CTA_PROTO_DST_PORT, &t.dstPort, 2);
    End(proto);
    End(orig);
    nlmsghdr h = {};
    h.nlmsg_len = static_cast<uint32_t>(buf_.size() - start);
    h.nlmsg_type = kCtGet;
    h.nlmsg_flags = NLM_F_REQUEST;  // no NLM_F_ACK: one answer per request, the entry or an error
    h.nlmsg_seq = seq;
    memcpy(buf_.data() + start, &h, sizeof h);
  }

 private:
  size_t Reserve(size_t n) {
    size_t at = buf_.size();
    buf_.resize(at + NLA_ALIGN(n), 0);
    return at;
  }
  void Put(const void* data, size_t n) {
    size_t at = Reserve(n);  // first: it may move the buffer
    memcpy(buf_.data() + at, data, n);
  }
  size_t Begin(uint16_t type) {
    nlattr a = {0, static_cast<uint16_t>(type | NLA_F_NESTED)};
    size_t at = buf_.size();
    Put(&a, sizeof a);
    return at;
  }
  void End(size_t at) {
    uint16_t len = static_cast<uint16_t>(buf_.size() - at);
    memcpy(buf_.data() + at + offsetof(nlattr, nla_len), &len, sizeof len);
  }
  void Attr(uint16_t type, const void* data, size_t n) {
    nlattr a = {static_cast<uint16_t>(NLA_HDRLEN + n), type};
    Put(&a, sizeof a);
    Put(data, n);
  }
  std::vector<uint8_t>& buf_;
};

// Calls fn(type, data, length) for each attribute in [p, p + len) until one is malformed.
template <typename F>
void ForEachAttr(const uint8_t* p, size_t len, F fn) {
  while (len >= NLA_HDRLEN) {
    nlattr a;
    memcpy(&a, p, sizeof a);
    if (a.nla_len < NLA_HDRLEN || a.nla_len > len) return;
    fn(static_cast<uint16_t>(a.nla_type & NLA_TYPE_MASK), p + NLA_HDRLEN, a.nla_len - NLA_HDRLEN);
    size_t step = NLA_ALIGN(a.nla_len);
    if (step >= len) return;
    p += step;
    len -= step;
  }
}

// The tuple of a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY nest; false when a part is missing.
bool ParseTuple(const uint8_t* p, size_t len, Tuple* t) {
  memset(t, 0, sizeof *t);
  unsigned have = 0;
  ForEachAttr(p, len, [&](uint16_t type, const uint8_t* d, size_t n) {
    if (type == CTA_TUPLE_IP) {
      ForEachAttr(d, n, [&](uint16_t kind, const uint8_t* a, size_t m) {
        bool v4 = kind == CTA_IP_V4_SRC || kind == CTA_IP_V4_DST;
        bool src = kind == CTA_IP_V4_SRC || kind == CTA_IP_V6_SRC;
        bool dst = kind == CTA_IP_V4_DST || kind == CTA_IP_V6_DST;
        if ((!src && !dst) || m != (v4 ? 4u : 16u)) return;
        uint8_t* to = src ? t->src : t->dst;
        if (v4) {
          memcpy(to, kMapped, 12);
          memcpy(to + 12, a, 4);
        } else {
          memcpy(to, a, 16);
        }
        have |= src ? 1 : 2;
      });
    } else if (type == CTA_TUPLE_PROTO) {
      ForEachAttr(d, n, [&](uint16_t kind, const uint8_t* a, size_t m) {
        if (kind == CTA_PROTO_NUM && m == 1) {
          t->proto = a[0];
          have |= 4;
        } else if (kind == CTA_PROTO_SRC_PORT && m == 2) {
          memcpy(&t->srcPort, a, 2);
          have |= 8;
        } else if (kind == CTA_PROTO_DST_PORT && m == 2) {
          memcpy(&t->dstPort, a, 2);
          have |= 16;
        }
      });
    }
  });
  return have == 31;
}

struct Entry {
  Tuple orig;
  Tuple reply;
  uint8_t id[4];  // CTA_ID, big-endian as the kernel sends it
};

// An IPCTNL_MSG_CT_NEW message's payload (after the netlink header); false when a tuple is missing.
bool ParseEntry(const uint8_t* p, size_t len, Entry* e) {
  memset(e, 0, sizeof *e);
  if (len < NLMSG_ALIGN(sizeof(nfgenmsg))) return false;
  unsigned have = 0;
  ForEachAttr(p + NLMSG_ALIGN(sizeof(nfgenmsg)), len - NLMSG_ALIGN(sizeof(nfgenmsg)),
              [&](uint16_t type, const uint8_t* d, size_t n) {
                if (type == CTA_TUPLE_ORIG && ParseTuple(d, n, &e->orig)) have |= 1;
                if (type == CTA_TUPLE_REPLY && ParseTuple(d, n, &e->reply)) have |= 2;
                if (type == CTA_ID && n == 4) memcpy(e->id, d, 4);
              });
  return have == 3;
}

// The answer record (conntrack.h) for `asked` from its entry: who sends in the other direction.
void WriteAnswer(uint8_t* out, const Tuple& asked, const Entry& e) {
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
    Writer writer(request);
    for (size_t k = 0; k < count; k++) {
      asked[k] = ReadTuple(tuples + pending[k] * kConntrackTupleBytes);
      writer.Get(asked[k], base + static_cast<uint32_t>(k));
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
        } else if (h.nlmsg_type == kCtNew) {
          Entry e;
          if (!ParseEntry(payload, payloadLen, &e)) {
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
