package embedded

import "github.com/dwcp/inference/clients/go/inference"

// Importing this package registers its Runtime as the drop-ins' local runtime (inference.RegisterLocal): then
// prediction.NewLSTMPredictor(path) and the other drop-ins run models in-process.
func init() {
	inference.RegisterLocal(func(path string, cfg inference.LocalConfig) (inference.LocalRuntime, error) {
		return Open(path, WithLibrary(cfg.Library))
	})
}

var _ inference.LocalRuntime = (*Runtime)(nil)
