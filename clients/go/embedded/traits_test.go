package embedded

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// venvPython is the repository's .venv python, which has dwcp_inference installed.
func venvPython(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "..", ".venv", "bin", "python"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the payload-trait parity test needs the repository's .venv (make setup): %v", err)
	}
	return p
}

// traitSamples are payload samples of many kinds and sizes: random, text, repetitive, skewed, empty, over the limit.
func traitSamples() [][]byte {
	rng := rand.New(rand.NewPCG(7, 11))
	var out [][]byte
	sizes := []int{0, 1, 2, 7, 8, 9, 15, 16, 17, 100, 127, 128, 129, 255, 256, 257, 1000, 4096, 4097, 65535, 65536,
		65537, 70000}
	for _, n := range sizes {
		for kind := 0; kind < 5; kind++ {
			b := make([]byte, n)
			for i := range b {
				switch kind {
				case 0: // uniform
					b[i] = byte(rng.IntN(256))
				case 1: // text-like
					b[i] = "etaoin shrdlu cmfwyp vbgkqj xz,.\n"[rng.IntN(33)]
				case 2: // skewed: a few byte values dominate
					b[i] = byte(int(math.Abs(rng.NormFloat64()) * 3))
				case 3: // repeated pattern
					b[i] = byte(i % 13)
				default: // half zeros, half random
					if rng.IntN(2) == 0 {
						b[i] = byte(rng.IntN(256))
					}
				}
			}
			out = append(out, b)
		}
	}
	for i := 0; i < 200; i++ { // random sizes and alphabets
		n, alphabet := 1+rng.IntN(9000), 1+rng.IntN(256)
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.IntN(alphabet))
		}
		out = append(out, b)
	}
	return out
}

// Go's payload traits equal features.py's bit for bit (entropy through numpy, ratio through Python's zlib).
func TestPayloadTraitsEqualFeaturesPy(t *testing.T) {
	samples := traitSamples()
	dir := t.TempDir()
	for i, s := range samples {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), s, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `
import sys
from pathlib import Path
from dwcp_inference.features import byte_entropy, sample_ratio
d = Path(sys.argv[1])
for i in range(int(sys.argv[2])):
    s = (d / str(i)).read_bytes()
    print(byte_entropy(s).hex(), sample_ratio(s).hex())
`
	cmd := exec.Command(venvPython(t), "-c", script, dir, strconv.Itoa(len(samples)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("features.py: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(samples) {
		t.Fatalf("features.py answered %d lines for %d samples", len(lines), len(samples))
	}
	for i, line := range lines {
		parts := strings.Fields(line)
		wantEntropy, err1 := strconv.ParseFloat(parts[0], 64)
		wantRatio, err2 := strconv.ParseFloat(parts[1], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("line %q: %v %v", line, err1, err2)
		}
		if got := ByteEntropy(samples[i]); got != wantEntropy {
			t.Errorf("sample %d (%d bytes): entropy %v (%x), features.py %v (%x)", i, len(samples[i]), got, got,
				wantEntropy, wantEntropy)
		}
		if got := SampleRatio(samples[i]); got != wantRatio {
			t.Errorf("sample %d (%d bytes): ratio %v, features.py %v", i, len(samples[i]), got, wantRatio)
		}
	}
}
