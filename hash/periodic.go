package hash

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and limits of [PeriodicConfig].
const (
	DefaultPeriod  = time.Hour
	MinPeriod      = time.Second
	DefaultIdleGap = 2 * time.Second
	DefaultSlots   = 4096
	MaxSlots       = 1 << 20
	MinSecretLen   = 16
)

// epochLabel prefixes the epoch number in the key derivation, so that the
// secret can be reused for other purposes under other labels.
const epochLabel = "flowspread epoch key"

// PeriodicConfig configures a [Periodic] policy. Both tunnel ends must use
// the same Secret, Period and Hasher to map flows alike; IdleGap and Slots
// only tune how each end keeps busy flows in place.
type PeriodicConfig struct {
	// Secret is shared by both tunnel ends; every epoch's key is derived
	// from it. At least [MinSecretLen] bytes. NewPeriodic copies it.
	Secret []byte
	// Period is how long one key lasts. Zero means [DefaultPeriod]; the
	// minimum is [MinPeriod].
	Period time.Duration
	// IdleGap is how long a flow must be silent before it may move to the
	// new epoch's mapping. Zero means [DefaultIdleGap]; it must be shorter
	// than Period.
	IdleGap time.Duration
	// Hasher builds each epoch's Hasher from its key. Nil means [Default].
	Hasher NewHasher
	// Slots is the number of activity slots that remember which flows are
	// busy, a power of two up to [MaxSlots]. Zero means [DefaultSlots].
	// Flows whose hashes share a slot share its fate: a busy flow keeps an
	// idle one that collides with it on the old mapping, never the other
	// way round. Each slot costs 8 bytes in each of two epoch tables.
	Slots int
}

// Periodic is a [Policy] that derives a new key every Period from a shared
// secret, so an observer who learns which outer addresses belong to a flow
// learns it for one epoch only. The rotation is a handover, not a switch:
// a flow busy at the rotation keeps the previous epoch's mapping until it
// pauses for IdleGap, so a burst in flight is never split across two outer
// address pairs (which would reorder it and reset its queue state on the
// path).
//
// # Epochs
//
// Epoch e covers the Unix times [e*Period, (e+1)*Period); its key is the
// first 16 bytes of HMAC-SHA256(Secret, "flowspread epoch key" || e as 8
// bytes big-endian) (RFC 2104). Two ends with one Secret therefore agree
// on every epoch's mapping without talking to each other, as far as their
// clocks agree: see "Clock skew".
//
// # Handover
//
// Each epoch has a table of Slots last-activity times indexed by the
// flow's hash under that epoch's key. After a rotation, a packet whose
// previous-epoch hash falls in a slot that is still active (it saw a
// packet less than IdleGap ago) uses the previous-epoch hash and refreshes
// the slot; otherwise it uses the new hash, and the slot is marked idle
// for good, so a flow that has moved never returns. Once no slot of the
// previous table has been active for IdleGap, FlowHash stops computing the
// previous-epoch hash altogether. Idleness is measured to within IdleGap/64:
// activity times are only rewritten when they advance by that much, which
// keeps busy slots from bouncing between CPU caches.
//
// Bounds: a flow keeps an old mapping at most until the next rotation, one
// Period, and never returns to a mapping it has left. A flow idle at a
// rotation moves at once. A flow that never pauses moves at every second
// rotation (it holds the mapping of epoch e through epoch e+1, then takes
// that of e+2), so no mapping lives longer than two Periods. A flow moves
// at most once per rotation, except through a slot collision: a flow held
// on epoch e-1's mapping through epoch e whose epoch-e slot is kept busy by
// another flow takes epoch e's mapping at the next rotation and moves again
// once that slot idles.
//
// Each end decides the handover from the packets it sends itself. A flow
// busy in both directions, or idle in both, is handed over alike at both
// ends; a one-way burst can leave the sender on the old mapping while the
// other end's first reply takes the new one, until the burst pauses.
//
// # Concurrency and clocks
//
// A Periodic is safe for concurrent use. FlowHash does not allocate and
// takes no lock except at a rotation, where exactly one caller installs
// the new epoch (the others wait for it, once per Period). Packets of one
// flow hashed concurrently with near-equal times may straddle the
// handover, one packet each side. A time slightly behind the current
// epoch (less than one Period, as when a caller read the clock just before
// another rotated) is hashed in the current epoch; a clock stepped back by
// more restarts from the earlier epoch with no handover.
//
// # Clock skew
//
// With the ends' clocks d apart (d < Period), each end rotates at its own
// clock's epoch boundary, so the ends map a flow apart only near a
// rotation: a flow busy across it for d, when the rotation that moves it
// reaches one end d before the other; and a flow that starts (or resumes
// after IdleGap of silence) in the last d before a rotation, by the clock
// that is ahead, until it next pauses for IdleGap, which may be a whole
// burst. So no skew is harmless, and IdleGap does not bound it: a skew d
// maps apart the flows that start in a fraction d/Period of the time (NTP's
// few milliseconds against the default hour: about one start in a
// million). TestPeriodicClockSkew measures this.
type Periodic struct {
	secret    []byte
	period    int64
	idleGap   int64
	tick      int64 // resolution of activity times, see "Handover"
	slotMask  uint64
	newHasher NewHasher

	state atomic.Pointer[epochState]
	mu    sync.Mutex // serializes rotations; FlowHash never takes it otherwise
}

var _ Policy = (*Periodic)(nil)

// epochState is immutable once published; the tables it points to are
// updated with atomics only.
type epochState struct {
	epoch      uint64
	hasher     Hasher
	cur        *activity
	prevHasher Hasher
	prev       *activity // nil when the previous epoch saw no packets here
}

// Special values of activity times, below any real Unix time.
const (
	never = math.MinInt64     // no packet yet; a later packet may write
	gone  = math.MinInt64 + 1 // idle for good; nothing writes it again
)

// activity records when packets last used each slot of one epoch's
// mapping. latest is never below any slot's time (minus the resolution);
// it is written before the slot, so marking the table gone, which happens
// only once latest is IdleGap old, can never hide an active slot.
type activity struct {
	latest atomic.Int64
	last   []atomic.Int64
}

func newActivity(slots int) *activity {
	a := &activity{last: make([]atomic.Int64, slots)}
	a.latest.Store(never)
	for i := range a.last {
		a.last[i].Store(never)
	}
	return a
}

// NewPeriodic validates cfg, fills in its defaults and returns the policy.
// Errors wrap [ErrSecretTooShort], [ErrPeriod], [ErrIdleGap], [ErrSlots] or
// [ErrNilHasher] and name the offending value.
func NewPeriodic(cfg PeriodicConfig) (*Periodic, error) {
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("%w: got %d bytes", ErrSecretTooShort, len(cfg.Secret))
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultPeriod
	}
	if cfg.Period < MinPeriod {
		return nil, fmt.Errorf("%w: got %v", ErrPeriod, cfg.Period)
	}
	if cfg.IdleGap == 0 {
		cfg.IdleGap = DefaultIdleGap
	}
	if cfg.IdleGap < 0 || cfg.IdleGap >= cfg.Period {
		return nil, fmt.Errorf("%w: got IdleGap %v with Period %v", ErrIdleGap, cfg.IdleGap, cfg.Period)
	}
	if cfg.Slots == 0 {
		cfg.Slots = DefaultSlots
	}
	if cfg.Slots < 0 || cfg.Slots > MaxSlots || cfg.Slots&(cfg.Slots-1) != 0 {
		return nil, fmt.Errorf("%w: got %d", ErrSlots, cfg.Slots)
	}
	if cfg.Hasher == nil {
		cfg.Hasher = Default
	}
	if cfg.Hasher(Key{}) == nil {
		return nil, ErrNilHasher
	}
	return &Periodic{
		secret:    append([]byte(nil), cfg.Secret...),
		period:    int64(cfg.Period),
		idleGap:   int64(cfg.IdleGap),
		tick:      max(int64(cfg.IdleGap)/64, 1),
		slotMask:  uint64(cfg.Slots - 1),
		newHasher: cfg.Hasher,
	}, nil
}

// Config returns the policy's configuration with its defaults filled in.
// The Secret is a copy.
func (p *Periodic) Config() PeriodicConfig {
	return PeriodicConfig{
		Secret:  append([]byte(nil), p.secret...),
		Period:  time.Duration(p.period),
		IdleGap: time.Duration(p.idleGap),
		Hasher:  p.newHasher,
		Slots:   int(p.slotMask + 1),
	}
}

// Epoch returns the epoch of now (Unix nanoseconds): floor(now / Period).
// Times before 1970 are epoch 0.
func (p *Periodic) Epoch(now int64) uint64 {
	if now < 0 {
		return 0
	}
	return uint64(now / p.period)
}

// EpochKey returns the key of epoch e, derived from the secret as described
// under "Epochs". It allocates; it is meant for tools and tests.
func (p *Periodic) EpochKey(e uint64) Key {
	mac := hmac.New(sha256.New, p.secret)
	mac.Write([]byte(epochLabel))
	var be [8]byte
	binary.BigEndian.PutUint64(be[:], e)
	mac.Write(be[:])
	var k Key
	copy(k[:], mac.Sum(nil))
	return k
}

// EpochHasher returns a new Hasher for epoch e: the configured NewHasher
// applied to [Periodic.EpochKey]. Without handover, FlowHash(in, now)
// equals EpochHasher(Epoch(now)).Sum64(in); tools that map recorded
// traffic use it. It allocates.
func (p *Periodic) EpochHasher(e uint64) Hasher { return p.newHasher(p.EpochKey(e)) }

// FlowHash returns the hash at now (Unix nanoseconds) of the flow whose
// key's binary form is in: the current epoch's, or the previous epoch's
// while the flow stays busy across a rotation, see "Handover".
//
// It records the flow's activity, so call it once per packet sent, with
// non-decreasing times per flow. It does not allocate, except at a
// rotation (a new epoch's table, once per Period).
func (p *Periodic) FlowHash(in Input, now int64) uint64 {
	st := p.stateAt(now)
	if prev := st.prev; prev != nil && prev.anyActive(now, p.idleGap) {
		h := sum64(st.prevHasher, &in)
		if prev.keep(h&p.slotMask, now, p.idleGap, p.tick) {
			return h
		}
	}
	h := sum64(st.hasher, &in)
	st.cur.record(h&p.slotMask, now, p.tick)
	return h
}

// stateAt returns the epoch state to hash at now, rotating if now is in a
// later epoch.
func (p *Periodic) stateAt(now int64) *epochState {
	e := p.Epoch(now)
	if st := p.state.Load(); st != nil && st.covers(e) {
		return st
	}
	return p.rotate(e)
}

// covers reports whether packets of epoch e are hashed with st: those of
// its own epoch, and late ones of the epoch before.
func (st *epochState) covers(e uint64) bool { return e == st.epoch || e+1 == st.epoch }

// rotate installs the state of epoch e. Callers racing to rotate queue on
// the mutex; the first installs the state and the others find it done.
func (p *Periodic) rotate(e uint64) *epochState {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state.Load()
	if st != nil && st.covers(e) {
		return st
	}
	next := &epochState{
		epoch:  e,
		hasher: p.EpochHasher(e),
		cur:    newActivity(int(p.slotMask + 1)),
	}
	// Only the epoch just before can hand flows over: if a whole epoch
	// passed without packets, every flow has been idle longer than IdleGap.
	if st != nil && e == st.epoch+1 {
		next.prev, next.prevHasher = st.cur, st.hasher
	}
	p.state.Store(next)
	return next
}

// anyActive reports whether any slot may still be active at now. When none
// is, it marks the table gone so that no late write revives it.
func (a *activity) anyActive(now, idleGap int64) bool {
	for {
		l := a.latest.Load()
		if l == gone {
			return false
		}
		if l != never && now-l < idleGap {
			return true
		}
		if a.latest.CompareAndSwap(l, gone) {
			return false
		}
	}
}

// keep reports whether the flow in slot i keeps the mapping of this
// (previous) epoch at now, refreshing the slot if so and marking it gone
// for good if not.
func (a *activity) keep(i uint64, now, idleGap, tick int64) bool {
	s := &a.last[i]
	for {
		v := s.Load()
		if v == gone {
			return false
		}
		if v == never || now-v >= idleGap {
			if s.CompareAndSwap(v, gone) {
				return false
			}
			continue
		}
		if now-v < tick {
			return true
		}
		if !a.bumpLatest(now, tick) {
			return false
		}
		if s.CompareAndSwap(v, now) {
			return true
		}
	}
}

// record notes a packet in slot i at now. Times that do not advance the
// slot by at least tick are not written.
func (a *activity) record(i uint64, now, tick int64) {
	s := &a.last[i]
	for {
		v := s.Load()
		if v == gone || (v != never && now-v < tick) {
			return
		}
		if !a.bumpLatest(now, tick) {
			return
		}
		if s.CompareAndSwap(v, now) {
			return
		}
	}
}

// bumpLatest raises latest to now, unless it is within tick of now
// already. It returns false if the table is gone.
func (a *activity) bumpLatest(now, tick int64) bool {
	for {
		l := a.latest.Load()
		if l == gone {
			return false
		}
		if l != never && now-l < tick {
			return true
		}
		if a.latest.CompareAndSwap(l, now) {
			return true
		}
	}
}
