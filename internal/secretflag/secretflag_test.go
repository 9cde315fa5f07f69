package secretflag

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/hash"
)

func TestLoad(t *testing.T) {
	const want = "000102030405060708090a0b0c0d0e0f"
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte(want+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		env       string
		wantGiven bool
		wantErr   string // part of the error, "" for none
	}{
		{name: "none"},
		{name: "flag", args: []string{"-key", want}, wantGiven: true},
		{name: "file", args: []string{"-key-file", file}, wantGiven: true},
		{name: "env", env: want + " ", wantGiven: true},
		{name: "flag and env", args: []string{"-key", want}, env: want, wantErr: "given 2 ways (-key, $TEST_KEY)"},
		{name: "file and env", args: []string{"-key-file", file}, env: want, wantErr: "given 2 ways (-key-file, $TEST_KEY)"},
		{name: "missing file", args: []string{"-key-file", file + ".missing"}, wantErr: "-key-file: open"},
		{name: "bad env", env: "zz", wantErr: "$TEST_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TEST_KEY", tc.env)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var key hash.Key
			s := Secret{What: "the key", Flag: "key", Env: "TEST_KEY"}
			Var(fs, &key, s.Flag, "the key")
			fs.StringVar(&s.File, "key-file", "", "the key's file")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			given, err := s.Load(fs, &key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || given != tc.wantGiven {
				t.Fatalf("given %v, err %v; want %v, nil", given, err, tc.wantGiven)
			}
			if got, _ := key.MarshalText(); given && string(got) != want {
				t.Errorf("key %s, want %s", got, want)
			}
			if fs.Lookup("key").DefValue != "" {
				t.Errorf("-help would show a default key %q", fs.Lookup("key").DefValue)
			}
		})
	}
}
