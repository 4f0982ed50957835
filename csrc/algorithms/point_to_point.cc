// Point-to-point matching engine (see point_to_point.h for the design).
//
// Per peer the transport carries: envelope, [payload], envelope, [payload], ... The envelope
// receive for a peer is re-posted right after the payload receive of the message it announced,
// so the transport's FIFO frame order always lines up with what we post.
#include "algorithms/point_to_point.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <thread>

namespace zcoll {
namespace {

// Transport tags of the two frame kinds (the p2p transport carries nothing else).
constexpr uint64_t kEnvelopeTag = 0x7032702d656e7600ULL;  // "p2p-env"
constexpr uint64_t kPayloadTag = 0x7032702d64617461ULL;   // "p2p-data"
constexpr uint64_t kMessage = 1, kFarewell = 2;
// Unmatched messages this large are held a moment before their payload is taken in (2 ranks,
// 16 MiB batch_isend_irecv with the send first: median 2.8-3.2 ms and worst 10-13 ms in 30
// exchanges when taken in at once, against 1.7 / 4 ms with the receive posted first).
constexpr size_t kHoldFromBytes = 64 << 10;
constexpr auto kHoldFor = std::chrono::microseconds(200);

std::string seconds(Clock::duration d) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << std::chrono::duration<double>(d).count() << " s";
  return os.str();
}

}  // namespace

void PointToPoint::dropUnexpected(UnexpectedIt u) {
  unexpectedBytes_ -= u->bytes;
  unexpected_.erase(u);
}

PointToPoint::PointToPoint(Transport& t, size_t maxUnexpectedBytes)
    : t_(t), maxUnexpectedBytes_(maxUnexpectedBytes), inbox_(t.size()), held_(t.size()), gone_(t.size(), 0),
      farewells_(t.size()) {
  gone_[t.rank()] = 1;  // no messages to ourselves: the backend refuses self as a peer
  for (int p = 0; p < t.size(); ++p)
    if (!gone_[p]) postEnvelopeRecv(p);
}

void PointToPoint::postEnvelopeRecv(int peer) {
  const RequestId r = t_.irecv(peer, kEnvelopeTag, &inbox_[peer], sizeof(Envelope));
  transfers_.push_back({r, true, [this, peer] { onEnvelope(peer); }});
}

bool PointToPoint::departed(int peer) const { return gone_[peer] != 0; }

void PointToPoint::send(int peer, int64_t tag, const void* data, size_t bytes, Deadline deadline, P2PCallback done) {
  const OpIt op = ops_.insert(ops_.end(), Op{true, peer, tag, const_cast<char*>(static_cast<const char*>(data)),
                                             bytes, deadline, Clock::now(), std::move(done)});
  if (!failure_.empty()) return finish(op, errorFor(*op, failure_));
  if (departed(peer)) return finish(op, errorFor(*op, "rank " + std::to_string(peer) + " has left (destroyed its process group)"));
  op->envelope = {kMessage, tag, bytes};
  op->inFlight = true;
  try {
    // The envelope completes before the payload (FIFO): tracking the last frame is enough.
    RequestId last = t_.isend(peer, kEnvelopeTag, &op->envelope, sizeof(Envelope));
    if (bytes > 0) last = t_.isend(peer, kPayloadTag, data, bytes);
    transfers_.push_back({last, false, [this, op] { finish(op, nullptr); }});
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

void PointToPoint::recv(int peer, int64_t tag, void* data, size_t bytes, Deadline deadline, P2PCallback done) {
  const OpIt op = ops_.insert(ops_.end(), Op{false, peer, tag, static_cast<char*>(data), bytes, deadline,
                                             Clock::now(), std::move(done)});
  if (!failure_.empty()) return finish(op, errorFor(*op, failure_));
  // The oldest message that arrived first (non-overtaking), if one matches.
  const auto u = std::find_if(unexpected_.begin(), unexpected_.end(), [&](const Unexpected& m) {
    return !m.claimed && !m.discard && (peer == kAnySource || m.source == peer) && m.tag == tag;
  });
  if (u != unexpected_.end()) return claim(op, u);
  try {
    if (matchHeld(op)) return;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (peer != kAnySource && departed(peer))
    return finish(op, errorFor(*op, "rank " + std::to_string(peer) + " has left (destroyed its process group)"));
  if (peer == kAnySource && std::all_of(gone_.begin(), gone_.end(), [](char g) { return g != 0; }))
    return finish(op, errorFor(*op, "no other rank is left to send it"));
}

bool PointToPoint::poll() {
  if (!failure_.empty()) return false;
  bool completed = false;
  try {
    for (size_t i = 0; i < transfers_.size();) {
      if (!t_.test(transfers_[i].req)) {
        ++i;
        continue;
      }
      std::function<void()> onDone = std::move(transfers_[i].onDone);
      transfers_.erase(transfers_.begin() + static_cast<std::ptrdiff_t>(i));
      onDone();  // may append transfers (the next envelope): this same pass tests them
      completed = true;
    }
    const auto now = Clock::now();
    for (int p = 0; p < t_.size(); ++p)
      if (held_[p].active && now - held_[p].since >= kHoldFor) {
        release(p, ops_.end());  // no receive came for it: into the unexpected queue
        completed = true;
      }
  } catch (const std::exception& e) {
    fail(e.what());
    return true;
  }
  expire(Clock::now());
  return completed;
}

void PointToPoint::release(int peer, OpIt match) {
  const Envelope e = held_[peer].e;
  held_[peer].active = false;
  receivePayload(peer, e, match);
  postEnvelopeRecv(peer);
}

bool PointToPoint::matchHeld(OpIt op) {
  for (int p = 0; p < t_.size(); ++p) {
    if (!held_[p].active || (op->peer != kAnySource && op->peer != p)) continue;
    if (held_[p].e.tag == op->tag) {
      release(p, op);
      return true;
    }
    release(p, ops_.end());
  }
  return false;
}

bool PointToPoint::busy() const {
  return !ops_.empty() || std::any_of(transfers_.begin(), transfers_.end(), [](const Transfer& t) { return !t.standing; }) ||
         std::any_of(held_.begin(), held_.end(), [](const Held& h) { return h.active; });
}

void PointToPoint::onEnvelope(int peer) {
  const Envelope e = inbox_[peer];
  if (e.kind == kFarewell) return onFarewell(peer);
  ZCOLL_CHECK(e.kind == kMessage, "rank ", t_.rank(), " p2p/", t_.name(), ": corrupt envelope from rank ", peer,
              " (kind ", e.kind, ")");
  // The oldest posted receive that names this source (or any) and this tag.
  const OpIt match = std::find_if(ops_.begin(), ops_.end(), [&](const Op& op) {
    return !op.send && !op.inFlight && (op.peer == peer || op.peer == kAnySource) && op.tag == e.tag;
  });
  // Unmatched and large, with no receive waiting for a later message from this peer: hold it.
  const auto awaited = [&] {
    return std::any_of(ops_.begin(), ops_.end(), [&](const Op& op) {
      return !op.send && !op.inFlight && (op.peer == peer || op.peer == kAnySource);
    });
  };
  if (match == ops_.end() && e.bytes >= kHoldFromBytes && !awaited()) {
    held_[peer] = {true, e, Clock::now()};
    return;  // the next envelope's receive is posted when it is released
  }
  receivePayload(peer, e, match);
  postEnvelopeRecv(peer);  // after the payload's receive: the transport takes frames in order
}

// Straight into the matching receive's buffer when the sizes agree; otherwise into a buffer of
// our own (unexpected, or drained and dropped when a receive of another size claimed it).
void PointToPoint::receivePayload(int peer, const Envelope& e, OpIt match) {
  if (match != ops_.end() && match->bytes == e.bytes) {
    match->source = peer;
    match->inFlight = true;
    if (e.bytes == 0) return finish(match, nullptr);
    const RequestId r = t_.irecv(peer, kPayloadTag, match->data, e.bytes);
    transfers_.push_back({r, false, [this, match] { finish(match, nullptr); }});
    return;
  }
  if (match == ops_.end() && unexpectedBytes_ + e.bytes > maxUnexpectedBytes_)
    throw Error("rank " + std::to_string(t_.rank()) + " p2p/" + t_.name() + ": rank " + std::to_string(peer) + " sent " +
                std::to_string(e.bytes) + " bytes with tag " + std::to_string(e.tag) +
                " that no receive has asked for yet, beyond the " + std::to_string(unexpectedBytes_) +
                " bytes of such messages already held (limit ZCOLL_P2P_MAX_UNEXPECTED_BYTES=" +
                std::to_string(maxUnexpectedBytes_) + "): post receives before the sends pile up, or raise the limit");
  unexpectedBytes_ += e.bytes;
  const UnexpectedIt u = unexpected_.insert(
      unexpected_.end(), Unexpected{peer, e.tag, e.bytes, std::unique_ptr<char[]>(new char[e.bytes])});
  if (match != ops_.end()) claim(match, u);
  if (e.bytes == 0) return onUnexpectedArrived(u);
  const RequestId r = t_.irecv(peer, kPayloadTag, u->data.get(), e.bytes);
  transfers_.push_back({r, false, [this, u] { onUnexpectedArrived(u); }});
}

// A receive takes an unexpected message: copy it now, or once the rest of it has arrived.
void PointToPoint::claim(OpIt op, UnexpectedIt u) {
  op->source = u->source;
  if (u->bytes != op->bytes) {  // only this receive fails; the stream stays in step
    finish(op, errorFor(*op, "the matching message from rank " + std::to_string(u->source) + " has " +
                                 std::to_string(u->bytes) + " bytes (sizes must be equal; the message is dropped)"));
    u->discard = true;
    if (u->arrived) dropUnexpected(u);
    return;
  }
  if (u->arrived) {
    if (u->bytes > 0) std::memcpy(op->data, u->data.get(), u->bytes);
    dropUnexpected(u);
    return finish(op, nullptr);
  }
  op->inFlight = true;
  u->claimed = true;
  u->claimedBy = op;
}

void PointToPoint::onUnexpectedArrived(UnexpectedIt u) {
  u->arrived = true;
  if (u->discard) {
    dropUnexpected(u);
  } else if (u->claimed) {
    const OpIt op = u->claimedBy;
    if (u->bytes > 0) std::memcpy(op->data, u->data.get(), u->bytes);
    dropUnexpected(u);
    finish(op, nullptr);
  }
}

// The peer closed its group after everything it sent: receives naming it can never match.
void PointToPoint::onFarewell(int peer) {
  gone_[peer] = 1;  // and no envelope receive is posted for it any more
  finishIf([&](const Op& op) { return !op.send && !op.inFlight && op.peer == peer; },
           "rank " + std::to_string(peer) + " has left (destroyed its process group) without sending it");
  if (std::all_of(gone_.begin(), gone_.end(), [](char g) { return g != 0; }))
    finishIf([](const Op& op) { return !op.send && !op.inFlight; }, "every other rank has left");
}

void PointToPoint::finish(OpIt op, std::exception_ptr error) {
  const P2PStatus status{op->source, std::move(error)};
  const P2PCallback done = std::move(op->done);
  ops_.erase(op);
  done(status);
}

void PointToPoint::finishIf(const std::function<bool(const Op&)>& pred, const std::string& why) {
  for (OpIt it = ops_.begin(); it != ops_.end();) {
    const OpIt next = std::next(it);
    if (pred(*it)) finish(it, errorFor(*it, why));
    it = next;
  }
}

// A receive still waiting for its message fails alone. An operation whose buffer the transport
// holds cannot be handed back without stopping the transport: its stream has stalled anyway.
void PointToPoint::expire(Clock::time_point now) {
  for (OpIt it = ops_.begin(); it != ops_.end();) {
    const OpIt next = std::next(it);
    if (now >= it->deadline) {
      const std::string waited = seconds(now - it->posted);
      if (it->inFlight)
        return fail(describe(*it) + " timed out after " + waited + " with its transfer under way (is rank " +
                    std::to_string(it->peer == kAnySource ? it->source : it->peer) +
                    " still running?); point-to-point on this group is stopped");
      const std::string from = it->peer == kAnySource ? "any rank" : "rank " + std::to_string(it->peer);
      finish(it, std::make_exception_ptr(TimeoutError(
                     "rank " + std::to_string(t_.rank()) + " p2p/" + t_.name() + ": " + describe(*it) +
                     " timed out after " + waited + ": no message with tag " + std::to_string(it->tag) +
                     " arrived from " + from)));
    }
    it = next;
  }
}

// The transport failed (dead peer, abort, stalled stream): abort it, so that it never touches a
// buffer again, and fail every operation with the cause.
void PointToPoint::fail(const std::string& why) {
  if (failure_.empty()) {
    failure_ = why;
    t_.abort(why);
  }
  transfers_.clear();
  unexpected_.clear();
  unexpectedBytes_ = 0;
  for (auto& h : held_) h.active = false;
  while (!ops_.empty()) finish(ops_.begin(), errorFor(ops_.front(), failure_));
}

void PointToPoint::close(const std::string& why, Deadline deadline) {
  if (!failure_.empty()) return;
  finishIf([](const Op& op) { return !op.inFlight; }, why);
  size_t out = 0;  // farewells the transport has not taken yet
  try {
    for (int p = 0; p < t_.size(); ++p) {
      if (departed(p)) continue;
      farewells_[p] = {kFarewell, 0, 0};
      transfers_.push_back({t_.isend(p, kEnvelopeTag, &farewells_[p], sizeof(Envelope)), false, [&out] { --out; }});
      ++out;
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  while (out > 0 && failure_.empty() && Clock::now() < deadline)
    if (!poll()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  fail(why);  // clears the transfers (and `out`'s callbacks) before `out` goes away
}

std::string PointToPoint::describe(const Op& op) const {
  std::string who = op.send ? "send to rank " + std::to_string(op.peer)
                    : op.peer == kAnySource ? "recv from any rank"
                                            : "recv from rank " + std::to_string(op.peer);
  return who + " (tag " + std::to_string(op.tag) + ", " + std::to_string(op.bytes) + " bytes)";
}

std::exception_ptr PointToPoint::errorFor(const Op& op, const std::string& what) const {
  return std::make_exception_ptr(
      Error("rank " + std::to_string(t_.rank()) + " p2p/" + t_.name() + ": " + describe(op) + ": " + what));
}

}  // namespace zcoll
