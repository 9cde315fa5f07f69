// Package secretflag gives the example programs one way to take a secret
// key: from its flag, a file, or an environment variable. A key on a
// command line is readable by every user of the host (ps,
// /proc/PID/cmdline); a file or the environment is not.
package secretflag

import (
	"bytes"
	"encoding"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Key is a key that parses itself, as [hash.Key] does.
type Key interface {
	encoding.TextMarshaler
	encoding.TextUnmarshaler
}

// Var defines the flag -name for key. A key has no default to show in
// -help: the zero key is no one's key.
func Var(fs *flag.FlagSet, key Key, name, usage string) {
	fs.TextVar(key, name, key, usage)
	fs.Lookup(name).DefValue = ""
}

// Secret is one key and the places it can come from: its flag (-Flag),
// its file flag (-Flag-file, whose value the program stores in File) and
// its environment variable Env. At most one may give it: a key given
// twice is an error rather than a precedence rule, since an operator who
// set two did not mean both, and a silent pick could run with the stale
// one.
type Secret struct {
	What, Flag, Env string // "the PSK", "psk", "FLOWTUN_PSK"
	File            string // the value of -Flag-file
}

// Load sets key from its file or its variable (the flag has set it
// already) and says whether any of the three gave it. An empty variable
// counts as unset; a file or a variable may end in white space.
func (s Secret) Load(fs *flag.FlagSet, key encoding.TextUnmarshaler) (given bool, err error) {
	var places []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == s.Flag {
			places = append(places, "-"+s.Flag)
		}
	})
	if s.File != "" {
		places = append(places, "-"+s.Flag+"-file")
	}
	env := os.Getenv(s.Env)
	if env != "" {
		places = append(places, "$"+s.Env)
	}
	if len(places) > 1 {
		return false, fmt.Errorf("%s is given %d ways (%s): give it one way only, preferably -%s-file or $%s", s.What, len(places), strings.Join(places, ", "), s.Flag, s.Env)
	}
	switch {
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return false, fmt.Errorf("-%s-file: %w", s.Flag, err)
		}
		if err := key.UnmarshalText(bytes.TrimSpace(b)); err != nil {
			return false, fmt.Errorf("-%s-file %s: %w", s.Flag, s.File, err)
		}
	case env != "":
		if err := key.UnmarshalText([]byte(strings.TrimSpace(env))); err != nil {
			return false, fmt.Errorf("$%s: %w", s.Env, err)
		}
	}
	return len(places) == 1, nil
}
