package embedded

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// bundledRepo is the repository's bundled model repository (dwcp_inference/models).
func bundledRepo(t testing.TB) string {
	t.Helper()
	needLibrary(t) // every test of the bundled models runs them
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "dwcp_inference", "models"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, CompressionModel)); err != nil {
		t.Fatalf("the bundled models are not at %s: %v", dir, err)
	}
	return dir
}

// needLibrary skips, saying why, only when no libonnxruntime can be found ($DWCP_ONNXRUNTIME_LIB unset and no
// .venv with the onnxruntime wheel); CI has the .venv, so there these tests run.
func needLibrary(t testing.TB) {
	t.Helper()
	if _, err := FindLibrary(""); err != nil {
		if os.Getenv(LibraryEnv) != "" {
			t.Fatal(err)
		}
		t.Skipf("no libonnxruntime: %v", err)
	}
}

// copyRepo copies the bundled models (or the named ones) into a temporary repository the test may change.
func copyRepo(t testing.TB, models ...string) string {
	t.Helper()
	src := bundledRepo(t)
	dst := t.TempDir()
	if len(models) == 0 {
		models = Models
	}
	for _, m := range models {
		copyDir(t, filepath.Join(src, m), filepath.Join(dst, m))
	}
	return dst
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, repo string, opts ...Option) *Runtime {
	t.Helper()
	needLibrary(t)
	r, err := Open(repo, append([]Option{WithPollInterval(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
