package hash

import "errors"

// Errors returned by [ParseKey] and [NewPeriodic]. They are preallocated;
// the functions wrap them with the offending value, so test with
// [errors.Is].
var (
	ErrKeyLength = errors.New("hash: key must be exactly 32 hex digits (128 bits)")
	ErrKeyDigit  = errors.New("hash: key contains a character that is not a hex digit")

	ErrSecretTooShort = errors.New("hash: PeriodicConfig.Secret must be at least 16 bytes")
	ErrPeriod         = errors.New("hash: PeriodicConfig.Period must be at least 1s")
	ErrIdleGap        = errors.New("hash: PeriodicConfig.IdleGap must be positive and shorter than Period")
	ErrSlots          = errors.New("hash: PeriodicConfig.Slots must be a power of two between 1 and 2^20")
	ErrNilHasher      = errors.New("hash: PeriodicConfig.Hasher returned a nil Hasher")
)
