package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

var (
	testPSK = [PSKSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
		17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	endA = netip.MustParseAddrPort("[2001:db8:ff::a]:51820")
	endB = netip.MustParseAddrPort("[2001:db8:ff::b]:51820")
)

// pair returns the sealer of A and the opener of B for the A->B direction.
func pair(t testing.TB, start uint64) (*sealer, *opener) {
	t.Helper()
	sendA, _, err := directionKeys(testPSK, endA, endB)
	if err != nil {
		t.Fatal(err)
	}
	_, recvB, err := directionKeys(testPSK, endB, endA)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSealer(sendA, start)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOpener(recvB)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

// sealPacket copies inner into a fresh datagram buffer and seals it.
func sealPacket(t testing.TB, s *sealer, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, overhead+len(inner))
	copy(buf[headerLen:], inner)
	d, err := s.seal(buf, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func openPacket(o *opener, d []byte) ([]byte, error) {
	ctr, err := parseHeader(d)
	if err != nil {
		return nil, err
	}
	return o.open(d, ctr)
}

func TestSealOpenRoundTrip(t *testing.T) {
	s, o := pair(t, 1000)
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"ipv4 header", 20},
		{"tcp ack", 60},
		{"full mtu", 1420},
		{"jumbo", 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := make([]byte, tc.size)
			rand.Read(inner)
			d := sealPacket(t, s, inner)
			if len(d) != overhead+tc.size {
				t.Fatalf("datagram is %d bytes, want %d", len(d), overhead+tc.size)
			}
			if d[0] != typeData {
				t.Errorf("type byte %#x, want %#x", d[0], typeData)
			}
			if tc.size >= 16 && bytes.Contains(d, inner) {
				t.Error("the datagram carries the plaintext")
			}
			got, err := openPacket(o, d)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if !bytes.Equal(got, inner) {
				t.Fatal("opened packet differs from the sealed one")
			}
		})
	}
}

func TestSealCounter(t *testing.T) {
	s, _ := pair(t, 41)
	for want := uint64(42); want < 45; want++ {
		d := sealPacket(t, s, []byte("x"))
		if got := binary.BigEndian.Uint64(d[1:9]); got != want {
			t.Fatalf("counter %d, want %d", got, want)
		}
	}
	s.counter = ^uint64(0) - 1
	sealPacket(t, s, []byte("last"))
	if _, err := s.seal(make([]byte, overhead+1), 1); !errors.Is(err, errExhausted) {
		t.Fatalf("seal past the last counter: %v, want errExhausted", err)
	}
}

func TestOpenRejects(t *testing.T) {
	s, o := pair(t, 7)
	inner := []byte("an inner packet of some length, 48 bytes long..")
	valid := sealPacket(t, s, inner)
	flip := func(i int) func([]byte) []byte {
		return func(d []byte) []byte { d[i] ^= 0x01; return d }
	}
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		want   error
	}{
		{"type byte", flip(0), errMalformed},
		{"counter high byte", flip(1), errAuth},
		{"counter low byte", flip(8), errAuth},
		{"first ciphertext byte", flip(headerLen), errAuth},
		{"last ciphertext byte", flip(headerLen + len(inner) - 1), errAuth},
		{"tag byte", flip(headerLen + len(inner) + 3), errAuth},
		{"cut tag", func(d []byte) []byte { return d[:len(d)-1] }, errAuth},
		{"appended byte", func(d []byte) []byte { return append(d, 0) }, errAuth},
		{"header only", func(d []byte) []byte { return d[:headerLen] }, errMalformed},
		{"shorter than header and tag", func(d []byte) []byte { return d[:overhead-1] }, errMalformed},
		{"empty", func(d []byte) []byte { return d[:0] }, errMalformed},
		{"unknown type", func(d []byte) []byte { d[0] = 0x02; return d }, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.change(bytes.Clone(valid))
			if _, err := openPacket(o, d); err != tc.want {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		if _, err := openPacket(o, bytes.Clone(valid)); err != nil {
			t.Fatalf("the untouched datagram: %v", err)
		}
	})
}

func TestOpenWrongKey(t *testing.T) {
	s, _ := pair(t, 0)
	d := sealPacket(t, s, []byte("secret"))
	otherPSK := testPSK
	otherPSK[0] ^= 1
	_, recv, err := directionKeys(otherPSK, endB, endA)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := newOpener(recv)
	if _, err := openPacket(o, bytes.Clone(d)); err != errAuth {
		t.Errorf("another PSK: %v, want errAuth", err)
	}
	// A's own receive key is the other direction's: a datagram reflected
	// back to its sender does not open.
	_, recvA, _ := directionKeys(testPSK, endA, endB)
	o, _ = newOpener(recvA)
	if _, err := openPacket(o, bytes.Clone(d)); err != errAuth {
		t.Errorf("reflected to the sender: %v, want errAuth", err)
	}
}

func TestDirectionKeys(t *testing.T) {
	sendA, recvA, err := directionKeys(testPSK, endA, endB)
	if err != nil {
		t.Fatal(err)
	}
	sendB, recvB, err := directionKeys(testPSK, endB, endA)
	if err != nil {
		t.Fatal(err)
	}
	if sendA != recvB || sendB != recvA {
		t.Error("one end's send key is not the other's receive key")
	}
	if sendA == sendB {
		t.Error("both directions use one key")
	}
	// The same address written two ways gives the same keys.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("192.0.2.1").As16()), 51820)
	s1, r1, _ := directionKeys(testPSK, mapped, endB)
	s2, r2, _ := directionKeys(testPSK, netip.MustParseAddrPort("192.0.2.1:51820"), endB)
	if s1 != s2 || r1 != r2 {
		t.Error("a v4-mapped address gives other keys than the plain IPv4 one")
	}
	// Ends that disagree about the addresses (a NAT rewrote A's) must
	// not end up sealing with one key.
	natA := netip.MustParseAddrPort("[2001:db8:ff::1a]:51820")
	sendB2, _, _ := directionKeys(testPSK, endB, natA)
	if sendB2 == sendA {
		t.Error("ends that disagree on A's address seal with the same key")
	}
	if _, _, err := directionKeys(testPSK, endA, endA); err == nil {
		t.Error("our own address as the peer's: no error")
	}
	ports := netip.AddrPortFrom(endA.Addr(), 51821)
	if _, _, err := directionKeys(testPSK, endA, ports); err != nil {
		t.Errorf("one address, two ports: %v", err)
	}
}

func TestHashKeyFromPSK(t *testing.T) {
	k1, err := hashKeyFromPSK(testPSK)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := hashKeyFromPSK(testPSK)
	other := testPSK
	other[31] ^= 0x80
	k3, _ := hashKeyFromPSK(other)
	if k1 != k2 {
		t.Error("one PSK gives two hash keys")
	}
	if k1 == k3 {
		t.Error("two PSKs give one hash key")
	}
	send, recv, _ := directionKeys(testPSK, endA, endB)
	if bytes.Equal(k1[:], send[:16]) || bytes.Equal(k1[:], recv[:16]) {
		t.Error("the hash key repeats a direction key")
	}
}

func TestSealOpenAllocs(t *testing.T) {
	s, o := pair(t, 0)
	buf := make([]byte, overhead+1420)
	inner := make([]byte, 1420)
	if n := testing.AllocsPerRun(100, func() {
		copy(buf[headerLen:], inner)
		s.catchUp(wallClock()) // once per batch in the tunnel
		d, _ := s.seal(buf, len(inner))
		ctr, _ := parseHeader(d)
		if _, err := o.open(d, ctr); err != nil {
			panic(err)
		}
	}); n != 0 {
		t.Errorf("seal and open allocate %v times per packet", n)
	}
}

// FuzzOpen feeds arbitrary datagrams to the receive checks: they never
// panic, and nothing but a sealed datagram opens.
func FuzzOpen(f *testing.F) {
	s, _ := pair(f, 0)
	f.Add(sealPacket(f, s, []byte("seed")))
	f.Add([]byte{typeData})
	f.Add(make([]byte, overhead))
	f.Fuzz(func(t *testing.T, d []byte) {
		_, o := pair(t, 0)
		ctr, err := parseHeader(d)
		if err != nil {
			if err != errMalformed {
				t.Fatalf("parseHeader: %v", err)
			}
			return
		}
		if _, err := o.open(d, ctr); err != nil && err != errAuth {
			t.Fatalf("open: %v", err)
		}
	})
}

// FuzzSealOpen checks the round trip for any inner packet.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte("inner"), uint64(0))
	f.Add([]byte{}, ^uint64(0)-1)
	f.Fuzz(func(t *testing.T, inner []byte, start uint64) {
		if start == ^uint64(0) {
			return
		}
		s, o := pair(t, start)
		d := sealPacket(t, s, inner)
		got, err := openPacket(o, d)
		if err != nil || !bytes.Equal(got, inner) {
			t.Fatalf("round trip of %d bytes: %v", len(inner), err)
		}
	})
}

// BenchmarkSeal measures sealing a full-size packet in place, against the
// bare AEAD call it wraps.
func BenchmarkSeal(b *testing.B) {
	for _, size := range []int{60, 1420} {
		b.Run(strconv.Itoa(size)+"B"+"/flowtun", func(b *testing.B) {
			s, _ := pair(b, 0)
			buf := make([]byte, overhead+size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.seal(buf, size); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strconv.Itoa(size)+"B"+"/aead", func(b *testing.B) {
			aead, _ := chacha20poly1305.New(make([]byte, 32))
			buf := make([]byte, overhead+size)
			nonce := make([]byte, 12)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				aead.Seal(buf[:headerLen], nonce, buf[headerLen:headerLen+size], buf[:headerLen])
			}
		})
	}
}

// BenchmarkOpen measures the receive checks and decryption of a sealed
// full-size packet.
func BenchmarkOpen(b *testing.B) {
	s, o := pair(b, 0)
	inner := make([]byte, 1420)
	d := sealPacket(b, s, inner)
	work := make([]byte, len(d))
	b.SetBytes(int64(len(inner)))
	b.ReportAllocs()
	for b.Loop() {
		copy(work, d)
		ctr, _ := parseHeader(work)
		if _, err := o.open(work, ctr); err != nil {
			b.Fatal(err)
		}
	}
}
