// ctnetlink messages (ctnetlink.h): built attribute by attribute, and read
// back with every length checked against what is there.
#include "ctnetlink.h"

#include <linux/netlink.h>
#include <sys/socket.h>

namespace podmeter::ctnetlink {
namespace {

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

}  // namespace

void AppendGet(std::vector<uint8_t>& buf, const Tuple& t, uint32_t seq) { Writer(buf).Get(t, seq); }

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

}  // namespace podmeter::ctnetlink
