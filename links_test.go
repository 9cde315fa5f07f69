package flowspread_test

import (
	"bufio"
	"fmt"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestLinksResolve checks every relative link of the repository: links in
// Markdown files, and links and .md paths in Go comments. Each must name a
// file or directory inside the repository, and an anchor (#heading) must
// name a heading of the Markdown file it points to.
func TestLinksResolve(t *testing.T) {
	problems, checked, err := checkLinks(".")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d relative links checked", checked)
	for _, p := range problems {
		t.Error(p)
	}
	if checked < 10 {
		t.Errorf("only %d relative links found: the checker does not see the README's links", checked)
	}
}

// TestLinkCheckerFindsDeadLinks runs the checker on a small tree with one
// dead link of each kind, so that TestLinksResolve passing means something.
func TestLinkCheckerFindsDeadLinks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	files := map[string]string{
		"../elsewhere/DESIGN.md": "# Design\n",
		"README.md": "# Title\n\n## A heading: with `code`\n\n" +
			"[ok](docs/a.md) [ok anchor](#a-heading-with-code) [ok dir](pkg) ![ok image](docs/p.png)\n" +
			"[web](https://example.com/x.md) `[not a link](gone.md)`\n" +
			"[dead](docs/missing.md)\n" +
			"[dead anchor](docs/a.md#nowhere)\n" +
			"[outside](../elsewhere/DESIGN.md)\n" +
			"```\n[in a code block](gone.md)\n```\n",
		"docs/a.md":  "# A\n\n[back](../README.md#title) see docs/a.md\n",
		"docs/p.png": "",
		"pkg/doc.go": "// Package pkg is documented in [the design].\n" +
			"// The notes are in docs/a.md and in ../shared/DESIGN.md.\n" +
			"//\n// [the design]: ../docs/gone.md\npackage pkg\n",
	}
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	problems, _, err := checkLinks(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"README.md:7: docs/missing.md",
		"README.md:8: docs/a.md#nowhere",
		"README.md:9: ../elsewhere/DESIGN.md: points outside",
		"pkg/doc.go:2: ../shared/DESIGN.md",
		"pkg/doc.go:4: ../docs/gone.md",
	}
	if len(problems) != len(want) {
		t.Errorf("found %d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
	for _, w := range want {
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, w)
		}
		if !found {
			t.Errorf("no problem reported for %s; got:\n%s", w, strings.Join(problems, "\n"))
		}
	}
}

// TestReadmeCommandsComeFirst checks that the README's first two fenced
// code blocks are the main job and the tests, one command each: a reader
// (and a script) finds them there.
func TestReadmeCommandsComeFirst(t *testing.T) {
	blocks, err := fencedBlocks("README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"./scripts/experiment", "./scripts/test"}
	if len(blocks) < 2 || blocks[0] != want[0] || blocks[1] != want[1] {
		t.Errorf("the README's first fenced blocks are %q, want %q", blocks[:min(2, len(blocks))], want)
	}
}

var (
	// mdLink matches an inline Markdown link or image: [text](target) or
	// [text](target "title").
	mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)`)
	// refDef matches a Markdown link reference definition: [text]: target
	refDef = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	// mdPath matches a bare path to a Markdown file in prose.
	mdPath = regexp.MustCompile(`(?:^|[\s(])((?:\.{1,2}/)*[\w.-]+(?:/[\w.-]+)*\.md)(?:#[\w-]+)?\b`)
	// codeSpan matches inline code, where a link is not a link.
	codeSpan = regexp.MustCompile("`[^`]*`")
	// url matches a URL in prose.
	url = regexp.MustCompile(`\S+://\S+`)
	// scheme matches a target with a URL scheme, such as https: or mailto:.
	scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// checkLinks checks the relative links of every .md and .go file under
// root (skipping hidden directories and testdata) and returns a line per
// dead link, "file:line: target: why", and how many links it checked.
func checkLinks(root string) (problems []string, checked int, err error) {
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, 0, err
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		var links []link
		switch filepath.Ext(name) {
		case ".md":
			links, err = markdownLinks(path)
		case ".go":
			links, err = goCommentLinks(path)
		default:
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, l := range links {
			checked++
			if why := checkLink(root, path, l); why != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", filepath.ToSlash(rel), l.line, l.target, why))
			}
		}
		return nil
	})
	return problems, checked, err
}

// A link is a relative target found in a file. A bare path in prose
// (rootToo) may be relative to the repository's root as well as to the
// file's directory, as prose and Go comments often write them.
type link struct {
	target  string
	line    int
	rootToo bool
}

// checkLink says what is wrong with l, found in file, or "" if nothing.
func checkLink(root, file string, l link) string {
	path, anchor, _ := strings.Cut(l.target, "#")
	target := file
	if path != "" {
		bases := []string{filepath.Dir(file)}
		if l.rootToo {
			bases = append(bases, root)
		}
		target = ""
		for _, base := range bases {
			p := filepath.Join(base, filepath.FromSlash(path))
			if _, err := os.Stat(p); err == nil {
				target = p
				break
			}
		}
		if target == "" {
			return "no such file in the repository"
		}
		if rel, err := filepath.Rel(root, target); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "points outside the repository, where a clone or a web view cannot follow it"
		}
	}
	if anchor == "" || filepath.Ext(target) != ".md" {
		return ""
	}
	anchors, err := headingAnchors(target)
	if err != nil {
		return err.Error()
	}
	if !anchors[anchor] {
		return "no heading with that anchor"
	}
	return ""
}

// relative says whether a target is a path in the repository rather than
// a URL.
func relative(target string) bool {
	return target != "" && !scheme.MatchString(target) && !strings.HasPrefix(target, "//")
}

// markdownLinks returns the relative links and bare .md paths of a
// Markdown file, outside code blocks and code spans.
func markdownLinks(path string) ([]link, error) {
	var links []link
	err := eachProseLine(path, func(n int, line string) {
		line = codeSpan.ReplaceAllString(line, "")
		links = append(links, linksIn(line, n)...)
	})
	return links, err
}

// goCommentLinks returns the relative link definitions ([Text]: target,
// as go/doc/comment reads them) and bare .md paths of a Go file's
// comments.
func goCommentLinks(path string) ([]link, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var links []link
	for _, group := range f.Comments {
		first := fset.Position(group.Pos()).Line
		text := group.Text()
		for _, def := range new(comment.Parser).Parse(text).Links {
			if relative(def.URL) {
				links = append(links, link{target: def.URL, line: first + lineOf(text, "]: "+def.URL)})
			}
		}
		for i, line := range strings.Split(text, "\n") {
			links = append(links, barePaths(line, first+i)...)
		}
	}
	return links, nil
}

// lineOf returns the line of text, from 0, where s first occurs.
func lineOf(text, s string) int {
	if i := strings.Index(text, s); i >= 0 {
		return strings.Count(text[:i], "\n")
	}
	return 0
}

// linksIn returns the relative links, link definitions and bare .md
// paths on one line of Markdown.
func linksIn(line string, n int) []link {
	var links []link
	if m := refDef.FindStringSubmatch(line); m != nil && relative(m[1]) {
		links = append(links, link{target: m[1], line: n})
	}
	for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
		if relative(m[1]) {
			links = append(links, link{target: m[1], line: n})
		}
	}
	if !refDef.MatchString(line) {
		links = append(links, barePaths(mdLink.ReplaceAllString(line, ""), n)...)
	}
	return links
}

// barePaths returns the paths to .md files named in a line of prose,
// outside URLs.
func barePaths(line string, n int) []link {
	var links []link
	for _, m := range mdPath.FindAllStringSubmatch(url.ReplaceAllString(line, ""), -1) {
		links = append(links, link{target: m[1], line: n, rootToo: true})
	}
	return links
}

// eachProseLine calls fn with each line of a Markdown file outside fenced
// code blocks, numbered from 1.
func eachProseLine(path string, fn func(n int, line string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	fence := ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
		case fence != "" && strings.HasPrefix(trimmed, fence):
			fence = ""
		case fence == "":
			fn(n, line)
		}
	}
	return sc.Err()
}

// headingAnchors returns the anchors GitHub gives the headings of a
// Markdown file: lower case, punctuation dropped, spaces as hyphens, and
// -1, -2... for repeats.
func headingAnchors(path string) (map[string]bool, error) {
	anchors := map[string]bool{}
	count := map[string]int{}
	err := eachProseLine(path, func(_ int, line string) {
		if !strings.HasPrefix(line, "#") {
			return
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		a := b.String()
		if c := count[a]; c > 0 {
			anchors[fmt.Sprintf("%s-%d", a, c)] = true
		} else {
			anchors[a] = true
		}
		count[a]++
	})
	return anchors, err
}

// fencedBlocks returns the contents of a Markdown file's fenced code
// blocks, trimmed.
func fencedBlocks(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var blocks []string
	var cur *strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			if cur == nil {
				cur = &strings.Builder{}
			} else {
				blocks = append(blocks, strings.TrimSpace(cur.String()))
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.WriteString(line + "\n")
		}
	}
	return blocks, nil
}
