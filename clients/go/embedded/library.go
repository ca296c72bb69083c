package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// LibraryEnv names the libonnxruntime shared library to load when no WithLibrary option is given.
const LibraryEnv = "DWCP_ONNXRUNTIME_LIB"

// onnxruntime_go keeps one environment per process: every Runtime shares it, with the library it was started on.
var (
	envMu  sync.Mutex
	envLib string
)

// FindLibrary returns the libonnxruntime to load: explicit if not empty, else $DWCP_ONNXRUNTIME_LIB, else the one
// the onnxruntime Python wheel ships in a .venv found in the working directory or one of its parents.
func FindLibrary(explicit string) (string, error) {
	for _, p := range []string{explicit, os.Getenv(LibraryEnv)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("embedded: libonnxruntime %s: %w", p, err)
		}
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			matches, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python3*", "site-packages",
				"onnxruntime", "capi", "libonnxruntime.so.*"))
			if len(matches) > 0 {
				sort.Strings(matches)
				return matches[len(matches)-1], nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("embedded: no libonnxruntime found: give its path with embedded.WithLibrary or $" +
		LibraryEnv + " (the onnxruntime Python wheel ships one in site-packages/onnxruntime/capi/), or run " +
		"where a .venv with onnxruntime is in the working directory or a parent")
}

// startEnvironment loads the library and starts onnxruntime's environment once per process.
func startEnvironment(lib string) error {
	envMu.Lock()
	defer envMu.Unlock()
	if ort.IsInitialized() {
		if envLib != lib {
			return fmt.Errorf("embedded: onnxruntime is already running on %s in this process, not %s", envLib, lib)
		}
		return nil
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("embedded: starting onnxruntime from %s: %w", lib, err)
	}
	envLib = lib
	return nil
}
