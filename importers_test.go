package flowspread_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// labModules are the modules only the lab (examples/testbed: plots) needs,
// by path prefix. A VPN that imports the library must not download them.
var labModules = []string{
	"gonum.org/v1/plot",
	"codeberg.org/go-",
	"git.sr.ht/~sbinet/gg",
	"github.com/ajstarks/svgo",
	"golang.org/x/image",
	"github.com/golang/freetype",
}

// TestLibraryImportersNeedNoLab makes a throwaway module that imports conn
// and conn/wireguard, as a VPN would, tidies it against this checkout, and
// checks that its go.sum lists no module of the lab. It needs the module
// cache or the module proxy, and skips when neither has what tidy needs.
func TestLibraryImportersNeedNoLab(t *testing.T) {
	imports := []string{
		"github.com/flowspread/flowspread/conn",
		"github.com/flowspread/flowspread/conn/wireguard",
	}
	sums := tidyImporter(t, imports)
	mods := modulesOf(sums)
	t.Logf("an importer of conn and conn/wireguard has %d modules in its go.sum: %s", len(mods), strings.Join(mods, ", "))
	if !slices.Contains(mods, "golang.zx2c4.com/wireguard") {
		t.Fatalf("go.sum lacks wireguard-go, which conn/wireguard imports: the importer was not tidied (go.sum: %s)", strings.Join(mods, ", "))
	}
	if lab := labIn(mods); len(lab) > 0 {
		t.Errorf("a module importing only the library needs the lab's %s: a library package imports a lab package or its dependencies", strings.Join(lab, ", "))
	}

	// The same check on an importer that does pull plotting in must see it,
	// or the check above proves nothing.
	t.Run("sees plotting when it is there", func(t *testing.T) {
		sums := tidyImporter(t, append(imports, "gonum.org/v1/plot"))
		if lab := labIn(modulesOf(sums)); !slices.Contains(lab, "gonum.org/v1/plot") {
			t.Errorf("an importer of gonum.org/v1/plot: the check found %v, want gonum.org/v1/plot among them", lab)
		}
	})
}

// tidyImporter writes a module whose main package imports imports, with
// this checkout as github.com/flowspread/flowspread, runs go mod tidy in it
// and returns its go.sum. The module starts from this checkout's go.sum,
// so that tidy finds every checksum it needs without the checksum
// database when the module cache has the modules; tidy drops the lines
// the importer does not need.
func tidyImporter(t *testing.T, imports []string) []byte {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goMod := "module example.com/importer\n\ngo 1.26.0\n\n" +
		"require github.com/flowspread/flowspread v0.0.0\n\n" +
		"replace github.com/flowspread/flowspread => " + root + "\n"
	var main strings.Builder
	main.WriteString("package main\n\nimport (\n")
	for _, p := range imports {
		main.WriteString("\t_ \"" + p + "\"\n")
	}
	main.WriteString(")\n\nfunc main() {}\n")
	ourSums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"go.mod": []byte(goMod), "main.go": []byte(main.String()), "go.sum": ourSums} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command(goTool, "mod", "tidy")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		if offline(out) {
			t.Skipf("go mod tidy needs the module proxy, which is out of reach (CI has it): %s", bytes.TrimSpace(out))
		}
		t.Fatalf("go mod tidy in a module importing %v: %v\n%s", imports, err, out)
	}
	sums, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// offline says whether go's output blames the network or a disabled proxy.
func offline(out []byte) bool {
	for _, s := range []string{"dial tcp", "no such host", "GOPROXY=off", "module lookup disabled", "network is unreachable", "connection refused", "i/o timeout", "TLS handshake timeout"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}

// modulesOf returns the module paths a go.sum lists, sorted, each once.
func modulesOf(sums []byte) []string {
	var mods []string
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			mods = append(mods, f[0])
		}
	}
	slices.Sort(mods)
	return slices.Compact(mods)
}

// labIn returns the modules of mods that belong to the lab.
func labIn(mods []string) []string {
	var lab []string
	for _, m := range mods {
		for _, prefix := range labModules {
			if strings.HasPrefix(m, prefix) {
				lab = append(lab, m)
				break
			}
		}
	}
	return lab
}
