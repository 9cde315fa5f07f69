package hash

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
)

const (
	sec = int64(time.Second)
	ms  = int64(time.Millisecond)
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testConfig rotates every 10 s with a 2 s idle gap. Epoch boundaries fall
// on multiples of 10 s; rotation is the one at 1_700_000_000 s.
func testConfig() PeriodicConfig {
	return PeriodicConfig{Secret: testSecret, Period: 10 * time.Second, IdleGap: 2 * time.Second}
}

const rotation = 1_700_000_000 * sec

func newTestPeriodic(t testing.TB, cfg PeriodicConfig) *Periodic {
	t.Helper()
	p, err := NewPeriodic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// flow returns the canonical key of UDP flow i between two documentation
// addresses, as an Input.
func flow(i int) Input {
	k := flowaddr.Key{
		Src:     netip.MustParseAddr("2001:db8:a::1").As16(),
		Dst:     netip.MustParseAddr("2001:db8:b::2").As16(),
		SrcPort: uint16(40000 + i),
		DstPort: 443,
		Proto:   17,
	}.Canonical()
	return k.Bytes()
}

// epochHash is the hash of b under epoch e's key alone.
func epochHash(p *Periodic, e uint64, b Input) uint64 { return p.EpochHasher(e).Sum64(b) }

func TestNewPeriodicValidation(t *testing.T) {
	nilHasher := func(Key) Hasher { return nil }
	tests := []struct {
		name    string
		cfg     PeriodicConfig
		wantErr error
		errHas  string
	}{
		{"no secret", PeriodicConfig{}, ErrSecretTooShort, "got 0 bytes"},
		{"short secret", PeriodicConfig{Secret: testSecret[:15]}, ErrSecretTooShort, "got 15 bytes"},
		{"period under 1s", PeriodicConfig{Secret: testSecret, Period: 999 * time.Millisecond}, ErrPeriod, "got 999ms"},
		{"negative period", PeriodicConfig{Secret: testSecret, Period: -time.Hour}, ErrPeriod, "got -1h0m0s"},
		{"negative idle gap", PeriodicConfig{Secret: testSecret, IdleGap: -time.Second}, ErrIdleGap, "got IdleGap -1s with Period 1h0m0s"},
		{"idle gap equals period", PeriodicConfig{Secret: testSecret, Period: time.Minute, IdleGap: time.Minute}, ErrIdleGap, "got IdleGap 1m0s with Period 1m0s"},
		{"default idle gap too long", PeriodicConfig{Secret: testSecret, Period: time.Second}, ErrIdleGap, "got IdleGap 2s with Period 1s"},
		{"slots not a power of two", PeriodicConfig{Secret: testSecret, Slots: 3}, ErrSlots, "got 3"},
		{"negative slots", PeriodicConfig{Secret: testSecret, Slots: -4}, ErrSlots, "got -4"},
		{"too many slots", PeriodicConfig{Secret: testSecret, Slots: 1 << 21}, ErrSlots, "got 2097152"},
		{"nil hasher", PeriodicConfig{Secret: testSecret, Hasher: nilHasher}, ErrNilHasher, "nil Hasher"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPeriodic(tt.cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewPeriodic error = %v, want %v", err, tt.wantErr)
			}
			if p != nil {
				t.Errorf("NewPeriodic returned a policy with an error")
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("error %q does not say %q", err, tt.errHas)
			}
		})
	}
}

func TestNewPeriodicDefaults(t *testing.T) {
	secret := bytes.Clone(testSecret)
	p := newTestPeriodic(t, PeriodicConfig{Secret: secret})
	cfg := p.Config()
	if cfg.Period != time.Hour || cfg.IdleGap != 2*time.Second || cfg.Slots != 4096 {
		t.Errorf("defaults: Period %v, IdleGap %v, Slots %d; want 1h, 2s, 4096", cfg.Period, cfg.IdleGap, cfg.Slots)
	}
	if _, ok := p.EpochHasher(0).(*SipHash24); !ok {
		t.Errorf("default Hasher is %T, want *SipHash24", p.EpochHasher(0))
	}
	before := p.EpochKey(7)
	secret[0] ^= 0xff
	if p.EpochKey(7) != before {
		t.Errorf("changing the caller's Secret slice changed the epoch key: NewPeriodic must copy it")
	}
	small := newTestPeriodic(t, PeriodicConfig{Secret: testSecret, Slots: 1, Hasher: func(k Key) Hasher { return NewSipHash13(k) }})
	if small.Config().Slots != 1 {
		t.Errorf("Slots: got %d, want 1", small.Config().Slots)
	}
	if _, ok := small.EpochHasher(0).(*SipHash13); !ok {
		t.Errorf("configured Hasher not used: got %T", small.EpochHasher(0))
	}
}

func TestEpoch(t *testing.T) {
	p := newTestPeriodic(t, PeriodicConfig{Secret: testSecret})
	hour := int64(time.Hour)
	tests := []struct {
		name string
		now  int64
		want uint64
	}{
		{"unix zero", 0, 0},
		{"end of first hour", hour - 1, 0},
		{"second hour", hour, 1},
		{"before 1970", -1, 0},
		{"2023-11-14", 1_700_000_000 * sec, 472222},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Epoch(tt.now); got != tt.want {
				t.Errorf("Epoch(%d) = %d, want %d", tt.now, got, tt.want)
			}
		})
	}
}

// TestEpochKey checks the derivation against HMAC-SHA256 computed by an
// independent implementation (Python's hmac module):
// hmac.new(secret, b"flowspread epoch key" + e.to_bytes(8, "big"), sha256).
func TestEpochKey(t *testing.T) {
	p := newTestPeriodic(t, PeriodicConfig{Secret: testSecret})
	tests := []struct {
		epoch uint64
		want  string
	}{
		{0, "5c0a5d3466ecab03e2e055e49106ba8d"},
		{472222, "c5cd08dc08d8505e8a1a0f0c6429f617"},
	}
	for _, tt := range tests {
		if got := p.EpochKey(tt.epoch).String(); got != tt.want {
			t.Errorf("EpochKey(%d) = %s, want %s", tt.epoch, got, tt.want)
		}
	}
}

func TestPeriodicWithoutHandoverUsesEpochHash(t *testing.T) {
	// The default Hasher, which FlowHash calls directly, and others.
	hashers := []struct {
		name string
		new  NewHasher
	}{
		{"default", nil},
		{"SipHash13", func(k Key) Hasher { return NewSipHash13(k) }},
	}
	for _, h := range hashers {
		t.Run(h.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Hasher = h.new
			p := newTestPeriodic(t, cfg)
			b := flow(1)
			// Sparse packets, each more than IdleGap after the last: every
			// one takes its own epoch's hash.
			for now := rotation - 25*sec; now < rotation+25*sec; now += 3 * sec {
				if got, want := p.FlowHash(b, now), epochHash(p, p.Epoch(now), b); got != want {
					t.Fatalf("at %v: got %#x, want epoch %d's %#x", time.Duration(now-rotation), got, p.Epoch(now), want)
				}
			}
		})
	}
}

// sendEvery sends b every 100 ms in [from, to) and checks each hash.
func sendEvery(t *testing.T, p *Periodic, b Input, from, to int64, want uint64, what string) {
	t.Helper()
	for now := from; now < to; now += 100 * ms {
		if got := p.FlowHash(b, now); got != want {
			t.Fatalf("at rotation%+v: got %#x, want the %s hash %#x", time.Duration(now-rotation), got, what, want)
		}
	}
}

func TestPeriodicBusyFlowKeepsHashUntilIdle(t *testing.T) {
	tests := []struct {
		name  string
		gap   int64
		moves bool
	}{
		{"silent just under IdleGap", 2*sec - 1, false},
		{"silent exactly IdleGap", 2 * sec, true},
		{"silent longer", 5 * sec, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPeriodic(t, testConfig())
			b := flow(1)
			old, next := epochHash(p, p.Epoch(rotation-1), b), epochHash(p, p.Epoch(rotation), b)
			if old == next {
				t.Fatal("test flow hashes alike in both epochs")
			}
			// Busy from 3 s before the rotation to 3 s after it.
			sendEvery(t, p, b, rotation-3*sec, rotation+3*sec, old, "old")
			last := rotation + 3*sec - 100*ms
			want, what := old, "old"
			if tt.moves {
				want, what = next, "new"
			}
			sendEvery(t, p, b, last+tt.gap, last+tt.gap+3*sec, want, what)
			if tt.moves {
				return
			}
			// It stays busy: it keeps the old mapping until it idles.
			last = last + tt.gap + 3*sec - 100*ms
			sendEvery(t, p, b, last+2*sec, last+4*sec, next, "new")
		})
	}
}

func TestPeriodicIdleFlowMovesAtRotation(t *testing.T) {
	tests := []struct {
		name     string
		lastSent int64 // before the rotation
		moves    bool
	}{
		{"idle 3s", rotation - 3*sec, true},
		{"idle exactly IdleGap", rotation - 2*sec, true},
		{"sent 1.5s before", rotation - 1500*ms, false},
		{"sent 1ns before", rotation - 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPeriodic(t, testConfig())
			b := flow(2)
			old, next := epochHash(p, p.Epoch(rotation-1), b), epochHash(p, p.Epoch(rotation), b)
			if got := p.FlowHash(b, tt.lastSent); got != old {
				t.Fatalf("before the rotation: got %#x, want %#x", got, old)
			}
			want := old
			if tt.moves {
				want = next
			}
			if got := p.FlowHash(b, rotation); got != want {
				t.Errorf("at the rotation: got %#x, want %#x (old %#x, new %#x)", got, want, old, next)
			}
		})
	}
}

// TestPeriodicNeverReturns uses a single slot, so every flow shares one
// fate, and checks that a flow that moved stays moved even when the clock
// reads a little earlier again.
func TestPeriodicNeverReturns(t *testing.T) {
	cfg := testConfig()
	cfg.Slots = 1
	p := newTestPeriodic(t, cfg)
	a, b := flow(10), flow(11)
	e0, e1 := p.Epoch(rotation-1), p.Epoch(rotation)
	p.FlowHash(b, rotation-5*sec)
	p.FlowHash(a, rotation-1*sec)
	// b was idle at the rotation, but shares the slot with busy a.
	if got, want := p.FlowHash(b, rotation), epochHash(p, e0, b); got != want {
		t.Errorf("b sharing a busy slot: got %#x, want the old %#x", got, want)
	}
	if got, want := p.FlowHash(a, rotation+500*ms), epochHash(p, e0, a); got != want {
		t.Errorf("a busy: got %#x, want the old %#x", got, want)
	}
	// 2.5 s of silence: both move, for good.
	checks := []struct {
		name string
		b    Input
		now  int64
	}{
		{"b after the pause", b, rotation + 3*sec},
		{"a after the pause", a, rotation + 3100*ms},
		{"a with the clock behind the rotation", a, rotation - 1*ms},
		{"a again", a, rotation + 3200*ms},
		{"b again", b, rotation + 3300*ms},
	}
	for _, c := range checks {
		if got, want := p.FlowHash(c.b, c.now), epochHash(p, e1, c.b); got != want {
			t.Errorf("%s: got %#x, want the new %#x", c.name, got, want)
		}
	}
}

func TestPeriodicBusyFlowMovesOncePerRotation(t *testing.T) {
	p := newTestPeriodic(t, testConfig())
	b := flow(3)
	e0 := p.Epoch(rotation)
	// A flow that never pauses holds epoch e's mapping through e+1 and
	// moves at every second rotation.
	period := 10 * sec
	for i, hold := range []uint64{e0, e0, e0 + 2, e0 + 2, e0 + 4} {
		from := rotation + int64(i)*period
		sendEvery(t, p, b, from, from+period, epochHash(p, hold, b), "held")
	}
}

func TestPeriodicSkippedEpoch(t *testing.T) {
	p := newTestPeriodic(t, testConfig())
	b := flow(4)
	p.FlowHash(b, rotation-500*ms)
	// Nothing was sent for the whole of the next epoch.
	now := rotation + 10*sec + 100*ms
	if got, want := p.FlowHash(b, now), epochHash(p, p.Epoch(now), b); got != want {
		t.Errorf("got %#x, want epoch %d's %#x", got, p.Epoch(now), want)
	}
}

func TestPeriodicClockSteps(t *testing.T) {
	p := newTestPeriodic(t, testConfig())
	b := flow(5)
	far := rotation + 20*sec // two epochs after rotation-1
	p.FlowHash(b, far)
	tests := []struct {
		name  string
		now   int64
		epoch uint64
	}{
		{"one epoch back stays", far - 10*sec, p.Epoch(far)},
		{"two epochs back restarts", far - 20*sec, p.Epoch(far - 20*sec)},
		{"forward again", far, p.Epoch(far)},
	}
	for _, tt := range tests {
		if got, want := p.FlowHash(b, tt.now), epochHash(p, tt.epoch, b); got != want {
			t.Errorf("%s: got %#x, want epoch %d's %#x", tt.name, got, tt.epoch, want)
		}
	}
}

// TestPeriodicEndsAgree runs two tunnel ends with one secret: each hashes
// the canonical key of the packets it sends, so the ends agree on every
// flow's mapping at every time, across rotations and handovers.
func TestPeriodicEndsAgree(t *testing.T) {
	endA := newTestPeriodic(t, testConfig())
	endB := newTestPeriodic(t, testConfig())
	const flows = 64
	keysA := make([]Input, flows)
	keysB := make([]Input, flows)
	for i := range flows {
		k := flowaddr.Key{
			Src:     netip.MustParseAddr("2001:db8:a::1").As16(),
			Dst:     netip.MustParseAddr("2001:db8:b::2").As16(),
			SrcPort: uint16(40000 + i), DstPort: 443, Proto: 6,
		}
		ka, kb := k.Canonical(), k.Reverse().Canonical() // kb: the reply direction, at B
		keysA[i], keysB[i] = ka.Bytes(), kb.Bytes()
	}
	rng := rand.New(rand.NewPCG(7, 7))
	busyUntil := make([]int64, flows)
	var pinned, moved int
	prevHash := make([]uint64, flows)
	hashA := make([]uint64, flows)
	var active []int
	for now := rotation - 15*sec; now < rotation+35*sec; now += 50 * ms {
		active = active[:0]
		for i := range flows {
			if now >= busyUntil[i] {
				// Bursts of 0.1-6 s, after pauses of 4 s on average.
				if rng.IntN(80) != 0 {
					continue
				}
				busyUntil[i] = now + rng.Int64N(6*sec) + 100*ms
			}
			active = append(active, i)
			hashA[i] = endA.FlowHash(keysA[i], now)
		}
		// B sends the same flows' replies, in another order.
		for j := len(active) - 1; j >= 0; j-- {
			i := active[j]
			hb := endB.FlowHash(keysB[i], now)
			if hashA[i] != hb {
				t.Fatalf("flow %d at rotation%+v: end A %#x, end B %#x", i, time.Duration(now-rotation), hashA[i], hb)
			}
			if hb != epochHash(endB, endB.Epoch(now), keysB[i]) {
				pinned++
			}
			if prevHash[i] != 0 && hb != prevHash[i] {
				moved++
			}
			prevHash[i] = hb
		}
	}
	if pinned == 0 || moved == 0 {
		t.Errorf("schedule exercised nothing: %d packets on a previous mapping, %d moves", pinned, moved)
	}
}

// TestPeriodicSlotGoesIdleWhileTableIsBusy checks the per-slot handover:
// flow a pauses while flow c, in another slot, keeps the previous table
// busy. a moves after its pause and stays moved, even for a packet whose
// time reads a little earlier.
func TestPeriodicSlotGoesIdleWhileTableIsBusy(t *testing.T) {
	cfg := testConfig()
	cfg.Slots = 2
	p := newTestPeriodic(t, cfg)
	e0, e1 := p.Epoch(rotation-1), p.Epoch(rotation)
	a := flow(20)
	var c Input
	for i, found := 21, false; !found; i++ {
		if b := flow(i); epochHash(p, e0, b)&1 != epochHash(p, e0, a)&1 {
			c, found = b, true
		}
	}
	p.FlowHash(a, rotation-1*sec)
	for now := rotation - 1*sec; now < rotation+5*sec; now += 100 * ms {
		if got, want := p.FlowHash(c, now), epochHash(p, e0, c); got != want {
			t.Fatalf("busy c at rotation%+v: got %#x, want the old %#x", time.Duration(now-rotation), got, want)
		}
		switch now - rotation {
		case 500 * ms:
			if got, want := p.FlowHash(a, now), epochHash(p, e0, a); got != want {
				t.Errorf("a within IdleGap: got %#x, want the old %#x", got, want)
			}
		case 3 * sec:
			if got, want := p.FlowHash(a, now), epochHash(p, e1, a); got != want {
				t.Errorf("a after a 2.5s pause: got %#x, want the new %#x", got, want)
			}
			if got, want := p.FlowHash(a, rotation-1*ms), epochHash(p, e1, a); got != want {
				t.Errorf("a with the clock behind the rotation: got %#x, want the new %#x", got, want)
			}
		case 3*sec + 100*ms:
			if got, want := p.FlowHash(a, now), epochHash(p, e1, a); got != want {
				t.Errorf("a again: got %#x, want the new %#x", got, want)
			}
		}
	}
}

// countingHasher counts Sum64 calls.
type countingHasher struct {
	h     Hasher
	calls *int
}

func (c countingHasher) Sum64(in Input) uint64 { *c.calls++; return c.h.Sum64(in) }

// TestPeriodicSkipsSecondHash checks that the previous epoch's hash is
// computed only while some flow may still be handed over.
func TestPeriodicSkipsSecondHash(t *testing.T) {
	var calls int
	cfg := testConfig()
	cfg.Hasher = func(k Key) Hasher { return countingHasher{NewSipHash24(k), &calls} }
	p := newTestPeriodic(t, cfg)
	a, b := flow(30), flow(31)
	tests := []struct {
		name      string
		b         Input
		now       int64
		wantCalls int
	}{
		{"first epoch", a, rotation - 1*sec, 1},
		{"a pinned: the previous hash only", a, rotation + 500*ms, 1},
		{"b checks the busy table, then moves", b, rotation + 600*ms, 2},
		{"table idle for IdleGap", b, rotation + 2500*ms, 1},
		{"stays skipped", a, rotation + 2600*ms, 1},
	}
	for _, tt := range tests {
		calls = 0
		p.FlowHash(tt.b, tt.now)
		if calls != tt.wantCalls {
			t.Errorf("%s: %d hashes, want %d", tt.name, calls, tt.wantCalls)
		}
	}
}
