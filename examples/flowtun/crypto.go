package main

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/flowspread/flowspread/hash"
)

// The wire format of one datagram:
//
//	0      1                 9
//	+------+-----------------+--------------------------------+
//	| type | counter (BE 64) | ChaCha20-Poly1305 ciphertext   |
//	+------+-----------------+-- of the inner packet + 16-byte tag
//
// The 9-byte header is the AEAD's additional data, so it cannot be
// changed without failing authentication. The nonce is 4 zero bytes and
// the counter (RFC 8439 section 2.8 leaves the nonce's construction to the
// protocol; a per-key counter never repeats it).
const (
	headerLen = 9
	tagLen    = chacha20poly1305.Overhead
	// overhead is what a datagram carries beyond the inner packet.
	overhead = headerLen + tagLen
	// typeData is the only datagram type: version 1, an inner packet.
	typeData byte = 0x01
)

// PSKSize is the length of the pre-shared key: 256 bits.
const PSKSize = 32

var (
	errMalformed = errors.New("malformed datagram: too short or of an unknown type")
	errAuth      = errors.New("datagram failed authentication: tampered, or sealed with another key")
	errExhausted = errors.New("send counter exhausted: restart the tunnel to start a new counter")
)

// sealer encrypts one direction of the tunnel. It is not safe for
// concurrent use: one goroutine owns it (the TUN reader).
type sealer struct {
	aead    cipher.AEAD
	counter uint64   // the last counter used
	nonce   [12]byte // kept here so that Seal's slice of it does not escape per call
}

// newSealer returns a sealer whose first datagram carries counter start+1.
func newSealer(key [32]byte, start uint64) (*sealer, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, counter: start}, nil
}

// maxCounterLag is how far the send counter may fall behind the wall
// clock before catchUp moves it up to the clock. A second: often enough
// that the peer, restarted, finds our counters within maxClockSkew of its
// clock; rarely enough that a datagram sealed before a jump has long
// arrived before the next, so the receiver's two rings (replayWindow)
// take every straggler.
const maxCounterLag = time.Second

// catchUp moves the counter up to now, the wall clock in nanoseconds,
// when it has fallen more than maxCounterLag behind (it counts
// datagrams, the clock counts nanoseconds). It never moves the counter
// back, so a nonce never repeats even when the clock steps back. It does
// not allocate.
func (s *sealer) catchUp(now uint64) {
	if now > s.counter && now-s.counter > uint64(maxCounterLag) {
		s.counter = now
	}
}

// seal encrypts the inner packet in buf[headerLen:headerLen+n] in place:
// it writes the header into buf[:headerLen] and returns the datagram,
// buf[:overhead+n]. buf must have room for it (cap(buf) >= overhead+n).
// It does not allocate.
func (s *sealer) seal(buf []byte, n int) ([]byte, error) {
	if s.counter == ^uint64(0) {
		return nil, errExhausted
	}
	s.counter++
	buf[0] = typeData
	binary.BigEndian.PutUint64(buf[1:headerLen], s.counter)
	binary.BigEndian.PutUint64(s.nonce[4:], s.counter)
	// Seal appends to buf[:headerLen], whose spare capacity starts exactly
	// at the plaintext: the one overlap the AEAD allows.
	return s.aead.Seal(buf[:headerLen], s.nonce[:], buf[headerLen:headerLen+n], buf[:headerLen]), nil
}

// opener decrypts the other direction. One goroutine owns it (the network
// reader).
type opener struct {
	aead  cipher.AEAD
	nonce [12]byte
}

func newOpener(key [32]byte) (*opener, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, err
	}
	return &opener{aead: aead}, nil
}

// parseHeader returns the counter of a datagram, or errMalformed. It
// checks only the form: the counter is not authentic until open succeeds.
// It does not allocate and never panics.
func parseHeader(dgram []byte) (uint64, error) {
	if len(dgram) < overhead || dgram[0] != typeData {
		return 0, errMalformed
	}
	return binary.BigEndian.Uint64(dgram[1:headerLen]), nil
}

// open authenticates and decrypts a datagram that parseHeader accepted,
// in place, and returns the inner packet, a slice of dgram. It does not
// allocate.
func (o *opener) open(dgram []byte, counter uint64) ([]byte, error) {
	binary.BigEndian.PutUint64(o.nonce[4:], counter)
	inner, err := o.aead.Open(dgram[headerLen:headerLen], o.nonce[:], dgram[headerLen:], dgram[:headerLen])
	if err != nil {
		return nil, errAuth
	}
	return inner, nil
}

// Key derivation. Everything comes from the PSK with HKDF-SHA-256
// (RFC 5869), each key under its own label, so no two uses share a key.

// directionKeys derives the key we seal with and the key we open with.
// The two canonical outer addresses name the directions: "a" is the lower
// one, so both ends agree which is which without talking. The labels
// also carry both addresses: two ends that disagree on them (a NAT
// between them, a typo) fail to authenticate each other, and never seal
// with one key from both ends, which would repeat nonces.
//
// Two ends given the same self and peer (a command copied from the other
// end, or -self and -peer swapped) derive the same send key, and no
// derivation from the pair can help: the inputs are the same. The guard
// is checkSelf, which refuses a self that is not this host's.
func directionKeys(psk [PSKSize]byte, self, peer netip.AddrPort) (send, recv [32]byte, err error) {
	self, peer = canonicalAddrPort(self), canonicalAddrPort(peer)
	cmp := self.Compare(peer)
	if cmp == 0 {
		return send, recv, fmt.Errorf("our outer address %v is the peer's: each end needs its own address or port", self)
	}
	lo, hi := self, peer
	sendLabel, recvLabel := "flowtun a->b", "flowtun b->a"
	if cmp > 0 {
		lo, hi = peer, self
		sendLabel, recvLabel = recvLabel, sendLabel
	}
	pair := " " + lo.String() + " " + hi.String()
	if send, err = deriveKey(psk, sendLabel+pair); err != nil {
		return send, recv, err
	}
	recv, err = deriveKey(psk, recvLabel+pair)
	return send, recv, err
}

// hashKeyFromPSK derives the flow hash key both ends use by default, so
// that flow-symmetric mapping needs no second secret.
func hashKeyFromPSK(psk [PSKSize]byte) (hash.Key, error) {
	k, err := hkdf.Key(sha256.New, psk[:], nil, "flowtun flow hash key", hash.KeySize)
	if err != nil {
		return hash.Key{}, err
	}
	return hash.Key(k), nil
}

func deriveKey(psk [PSKSize]byte, label string) ([32]byte, error) {
	k, err := hkdf.Key(sha256.New, psk[:], nil, label, 32)
	if err != nil {
		return [32]byte{}, err
	}
	return [32]byte(k), nil
}

// canonicalAddrPort writes an address the one way both ends would:
// IPv4-mapped IPv6 as IPv4, no zone.
func canonicalAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}
