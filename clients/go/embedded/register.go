package embedded

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

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
	clientOpts := append([]inference.Option{inference.WithTarget(cfg.Target)}, cfg.ClientOptions...)
	dial := func() (grpc.ClientConnInterface, func(), error) {
		conn, err := inference.Dial(clientOpts...)
		if err != nil {
			return nil, nil, fmt.Errorf("embedded: service %s: %w", cfg.Target, err)
		}
		return conn, func() { conn.Close() }, nil
	}
	wait := cfg.SyncWait
	if wait <= 0 {
		wait = dropInSyncWait
	}
	opts := []Option{WithLibrary(cfg.Library), WithModels(cfg.Models...), WithServeBeforeSync(), WithSyncWait(wait)}
	rt, err := fromService(context.Background(), inference.ConnKey(clientOpts...), dial, cfg.CacheDir, opts)
	if err != nil {
		return nil, err // not a nil *Runtime in the interface
	}
	return rt, nil
}

// dropInSyncWait is how long a drop-in's constructor waits for the first sync (LocalConfig.SyncWait 0): long
// enough for a version or two on a LAN, short enough that a service that is down does not stall a constructor.
const dropInSyncWait = 5 * time.Second

var _ inference.LocalRuntime = (*Runtime)(nil)
