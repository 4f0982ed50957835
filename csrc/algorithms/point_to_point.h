// Point-to-point messages with MPI-style matching, over a Transport of their own
// (docs/architecture.md, point-to-point).
//
// The transport delivers per-pair FIFO frames whose tag and size the receiver must know when it
// posts; user receives name a tag but come in any order, from any source, before or after the
// message. So each user message travels as two frames: a fixed-size envelope (user tag, bytes)
// and then the payload. The engine always keeps one envelope receive posted per peer. An arriving
// envelope is matched against the posted receives (same tag, same or any source, oldest first);
// an unmatched message is received into an owned buffer on the unexpected queue, where later
// receives find it (oldest first: MPI's non-overtaking order per source and tag). A sender thus
// never waits long for the receiver to post: symmetric exchanges of large messages cannot
// deadlock. A large unmatched message is first held for a moment (its envelope read, its payload
// left with the sender): the receive usually follows within microseconds (batch_isend_irecv
// posts the send first), and taking the payload in at once would cost a buffer and a second
// copy.
//
// Single-threaded: one thread (the backend's p2p thread) makes every call, poll() included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace zcoll {

constexpr int kAnySource = -1;

// How an operation ended, reported once, when the engine no longer touches its buffer.
struct P2PStatus {
  int source = -1;           // receives: the rank the message came from
  std::exception_ptr error;  // null on success
};
using P2PCallback = std::function<void(const P2PStatus&)>;

class PointToPoint {
 public:
  // Posts the envelope receives. Messages that arrive before their receive is posted are held,
  // up to `maxUnexpectedBytes` in all; one more fails the engine with an error that says so.
  explicit PointToPoint(Transport& t, size_t maxUnexpectedBytes = size_t{1} << 30);

  // Queue a send; it completes when the transport has taken the bytes (not when received).
  void send(int peer, int64_t tag, const void* data, size_t bytes, Deadline deadline, P2PCallback done);
  // Queue a receive of exactly `bytes` from `peer` or kAnySource. A message of another size
  // fails this receive alone (the message is consumed). Unmatched by `deadline`: TimeoutError.
  void recv(int peer, int64_t tag, void* data, size_t bytes, Deadline deadline, P2PCallback done);
  // One non-blocking step: progress the transport, match arrivals, complete and expire
  // operations. True when something completed (worth polling again at once).
  bool poll();
  // Operations pending or messages still arriving: keep polling. False: only the standing
  // envelope receives are posted, and sleeping costs nothing but the unread messages.
  bool busy() const;
  // Leaving the group: fail the posted receives with `why`, send every peer a farewell (so they
  // fail receives naming us instead of timing out), poll until it is out or `deadline`, then
  // abort the transport and fail whatever is still under way.
  void close(const std::string& why, Deadline deadline);

 private:
  struct Envelope {
    uint64_t kind;   // kMessage or kFarewell
    int64_t tag;     // the user's tag
    uint64_t bytes;  // payload bytes that follow (no payload frame when 0)
  };
  struct Op {
    bool send;
    int peer;  // kAnySource for any-source receives
    int64_t tag;
    char* data;
    size_t bytes;
    Deadline deadline;
    Clock::time_point posted;
    P2PCallback done;
    Envelope envelope{};    // sends: what goes ahead of the payload
    bool inFlight = false;  // its buffer is being filled or sent: it cannot be dropped alone
    int source = -1;
  };
  using OpIt = std::list<Op>::iterator;
  struct Unexpected {  // a message that arrived before its receive
    int source;
    int64_t tag;
    size_t bytes;
    std::unique_ptr<char[]> data;
    bool arrived = false;
    OpIt claimedBy{};  // a receive waiting for the rest of the payload
    bool claimed = false, discard = false;
  };
  using UnexpectedIt = std::list<Unexpected>::iterator;
  // An unmatched envelope whose payload is not taken in yet; that peer's stream pauses behind it
  // until a receive matches it, a receive asks that peer for another message, or kHoldFor ends.
  struct Held {
    bool active = false;
    Envelope e{};
    Clock::time_point since{};
  };
  struct Transfer {  // a transport request and what to do when it completes
    RequestId req;
    bool standing;  // an envelope receive: always posted, not work to wait for
    std::function<void()> onDone;
  };

  void postEnvelopeRecv(int peer);
  void onEnvelope(int peer);
  void onFarewell(int peer);
  void receivePayload(int peer, const Envelope& e, OpIt match);
  // Takes peer's held payload in (into `match`, or the unexpected queue when it is ops_.end())
  // and reads on in its stream.
  void release(int peer, OpIt match);
  // A receive just posted: a held message it matches goes into its buffer; held messages of
  // the peers it names that it does not match are taken in, so that the stream reaches its own.
  // True when a held message matched.
  bool matchHeld(OpIt op);
  void claim(OpIt op, UnexpectedIt u);
  void dropUnexpected(UnexpectedIt u);
  void onUnexpectedArrived(UnexpectedIt u);
  void finish(OpIt op, std::exception_ptr error);
  void finishIf(const std::function<bool(const Op&)>& pred, const std::string& why);
  void expire(Clock::time_point now);
  void fail(const std::string& why);
  bool departed(int peer) const;
  std::string describe(const Op& op) const;
  std::exception_ptr errorFor(const Op& op, const std::string& what) const;

  Transport& t_;
  std::list<Op> ops_;  // unfinished operations in issue order (receives match oldest first)
  std::list<Unexpected> unexpected_;
  const size_t maxUnexpectedBytes_;
  size_t unexpectedBytes_ = 0;  // payload bytes held in unexpected_
  std::vector<Transfer> transfers_;
  std::vector<Envelope> inbox_;  // per peer: where its next envelope lands
  std::vector<Held> held_;       // per peer
  std::vector<char> gone_;       // per peer: said farewell (no envelope receive posted any more)
  std::vector<Envelope> farewells_;
  std::string failure_;  // set once the transport is aborted; every later operation fails with it
};

}  // namespace zcoll
