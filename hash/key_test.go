package hash

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Key
		wantErr error
		errHas  string
	}{
		{name: "lower case", in: "000102030405060708090a0b0c0d0e0f", want: refKey},
		{name: "upper case", in: "000102030405060708090A0B0C0D0E0F", want: refKey},
		{name: "zero", in: strings.Repeat("0", 32), want: Key{}},
		{name: "all ones", in: strings.Repeat("f", 32), want: Key{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{name: "empty", in: "", wantErr: ErrKeyLength, errHas: "got 0 characters"},
		{name: "31 digits", in: strings.Repeat("a", 31), wantErr: ErrKeyLength, errHas: "got 31 characters"},
		{name: "33 digits", in: strings.Repeat("a", 33), wantErr: ErrKeyLength, errHas: "got 33 characters"},
		{name: "0x prefix", in: "0x" + strings.Repeat("a", 30), wantErr: ErrKeyDigit, errHas: "'x' at offset 1"},
		{name: "space", in: strings.Repeat("a", 16) + " " + strings.Repeat("a", 15), wantErr: ErrKeyDigit, errHas: "' ' at offset 16"},
		{name: "letter g", in: strings.Repeat("a", 31) + "g", wantErr: ErrKeyDigit, errHas: "'g' at offset 31"},
		{name: "multibyte", in: "é" + strings.Repeat("a", 30), wantErr: ErrKeyDigit, errHas: "offset 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseKey(%q) error = %v, want %v", tt.in, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("error %q does not say %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseKey(%q) = %x, want %x", tt.in, got, tt.want)
			}
		})
	}
}

func TestKeyStringRoundTrip(t *testing.T) {
	if got, want := refKey.String(), "000102030405060708090a0b0c0d0e0f"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKey(k.String())
	if err != nil || back != k {
		t.Errorf("ParseKey(%q) = %v, %v; want the key back", k.String(), back, err)
	}
}

func TestKeyTextMarshaling(t *testing.T) {
	type config struct{ Key Key }
	b, err := json.Marshal(config{Key: refKey})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Key":"000102030405060708090a0b0c0d0e0f"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var c config
	if err := json.Unmarshal(b, &c); err != nil || c.Key != refKey {
		t.Errorf("unmarshal = %v, %v; want %v", c.Key, err, refKey)
	}
	if err := json.Unmarshal([]byte(`{"Key":"abc"}`), &c); !errors.Is(err, ErrKeyLength) {
		t.Errorf("unmarshal of a short key: error %v, want %v", err, ErrKeyLength)
	}
}

func TestNewKeyIsRandom(t *testing.T) {
	a, errA := NewKey()
	b, errB := NewKey()
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	// Two 128-bit random keys collide or come out zero with probability
	// 2^-127: a failure here means the keys are not random.
	if a == b || a == (Key{}) {
		t.Errorf("NewKey gave %v and %v", a, b)
	}
}

func FuzzParseKey(f *testing.F) {
	f.Add("000102030405060708090a0b0c0d0e0f")
	f.Add("000102030405060708090A0B0C0D0E0F")
	f.Add("0x0102030405060708090a0b0c0d0e0f")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrKeyLength) && !errors.Is(err, ErrKeyDigit) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if got := k.String(); got != strings.ToLower(s) {
			t.Fatalf("ParseKey(%q).String() = %q", s, got)
		}
	})
}

// TestKeyFlag checks that a Key is a command-line flag by itself
// (flag.TextVar): it takes the form String writes, in either case, gives
// it back through MarshalText, and a bad value is refused with the reason
// and leaves the key it had.
func TestKeyFlag(t *testing.T) {
	random, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{random.String(), strings.ToUpper(random.String()), refKey.String()} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var k Key
		fs.TextVar(&k, "key", Key{}, "")
		if err := fs.Parse([]string{"-key", in}); err != nil {
			t.Fatalf("-key %s: %v", in, err)
		}
		text, err := k.MarshalText()
		if err != nil || string(text) != strings.ToLower(in) {
			t.Errorf("-key %s: MarshalText = %q, %v; want the digits back in lower case", in, text, err)
		}
		if got := fs.Lookup("key").Value.String(); got != strings.ToLower(in) {
			t.Errorf("-key %s: the flag shows %q", in, got)
		}
	}
	for _, tt := range []struct {
		in, errHas string
	}{
		{"0011", "exactly 32 hex digits (128 bits): got 4 characters"},
		{strings.Repeat("0", 31) + "z", "not a hex digit: 'z' at offset 31"},
		{" " + strings.Repeat("0", 31), "' ' at offset 0"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		k := refKey
		fs.TextVar(&k, "key", refKey, "")
		err := fs.Parse([]string{"-key", tt.in})
		if err == nil || !strings.Contains(err.Error(), tt.errHas) || !strings.Contains(err.Error(), "-key") {
			t.Errorf("-key %q: error %v, want one naming -key and saying %q", tt.in, err, tt.errHas)
		}
		if k != refKey {
			t.Errorf("-key %q: a refused value changed the key to %v", tt.in, k)
		}
	}
}
