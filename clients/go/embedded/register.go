package embedded

import (
	"context"
	"fmt"
	"time"

	"github.com/dwcp/inference/clients/go/inference"
)

// Importing this package registers its Runtime as the drop-ins' local runtime (inference.RegisterLocal): then
// prediction.NewLSTMPredictor(path) and the other drop-ins run models in-process, and their WithLocalCache
// option runs the service's versions in-process (FromService).
func init() {
	inference.RegisterLocal(openLocal)
}

func openLocal(path string, cfg inference.LocalConfig) (inference.LocalRuntime, error) {
	if !cfg.FromService() {
		return Open(path, WithLibrary(cfg.Library))
	}
	conn, err := inference.Dial(append([]inference.Option{inference.WithTarget(cfg.Target)}, cfg.ClientOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("embedded: service %s: %w", cfg.Target, err)
	}
	wait := cfg.SyncWait
	if wait <= 0 {
		wait = dropInSyncWait
	}
	opts := []Option{WithLibrary(cfg.Library), WithModels(cfg.Models...), WithServeBeforeSync(), WithSyncWait(wait)}
	rt, err := FromService(context.Background(), conn, cfg.CacheDir, opts...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	stopSync := rt.stopSync
	rt.stopSync = func() {
		stopSync()
		conn.Close()
	}
	return rt, nil
}

// dropInSyncWait is how long a drop-in's constructor waits for the first sync (LocalConfig.SyncWait 0): long
// enough for a version or two on a LAN, short enough that a service that is down does not stall a constructor.
const dropInSyncWait = 5 * time.Second

var _ inference.LocalRuntime = (*Runtime)(nil)
