// Package embedded runs the inference service's model versions in the Go process: the same model.onnx files,
// verified as the server verifies them, answering the server's request and response types.
//
//	rt, err := embedded.Open("/var/lib/dwcp/models") // or a model's or a version's directory, or a model.onnx
//	...
//	resp, err := rt.SelectCompression(ctx, &pb.SelectCompressionRequest{Link: link, Payload: payload})
//	// resp.Decision.Choice, resp.Model (the version that answered)
//
// Versions come from a model repository in the service's layout (<repo>/<model>/<version>/{model.onnx,
// metadata.json} and <repo>/<model>/policy.json, optionally a state directory's policy.json as the server's
// --state-dir), with the server's rules for which versions load (keep_latest, pinned, labels, disabled) and which
// one answers (a version or label in the request's ModelSelector, else the weighted split, else stable, else the
// highest). Before a version serves, it is checked as services/runtime.py does: the metadata parses, its version
// is its directory's, model.onnx has the metadata's sha256, the graph's inputs and outputs are the metadata's,
// every test vector's raw columns give its outputs and features within the metadata's tolerance, and the outputs
// are finite at the ends of every raw field's range. Only versions whose graph computes the features
// (metadata features_in_graph) are embedded: Go computes no features, so it cannot drift from the server. Older
// versions need the Python feature pipeline; they are refused here, saying so, and the server still serves them.
//
// The one input computed outside the graph, a payload sample's traits, is computed as features.py computes it:
// the byte entropy with the C library's log2 and numpy's pairwise summation, the zlib level-1 ratio with libz
// itself (cgo; Go's compress/flate produces other bytes). A test proves both equal to features.py's, bit for bit.
//
// Requests become the version's raw columns (windows: the last `window` samples; categorical fields as indices
// into their vocabularies) and are checked against the metadata's ranges: bad input is codes.InvalidArgument
// naming the field as the caller sent it ("history.samples[12].bandwidth_mbps: expected >= 0, got -5"), in the
// server's wording (not guaranteed byte-identical). The decision rules are services/decisions.py's; a NaN or
// infinite output is codes.Internal, as on the server. Embedded answers carry no prediction_id: ids are signed
// with the service's key, and ReportOutcome needs one the service issued.
//
// The Runtime watches the directory (WithPollInterval, default 2 s; Reload scans at once), verifies new versions
// off the call path and publishes an immutable snapshot atomically; a retired version's session is freed only
// after the calls using it return. A version that fails verification never replaces a working one (one whose
// files change in place and no longer verify keeps serving its loaded copy). Status lists what is loaded and
// what was refused and why; WithEventHandler reports each change.
//
// The library is libonnxruntime as the onnxruntime Python wheel ships it (site-packages/onnxruntime/capi/
// libonnxruntime.so.*), found through WithLibrary, $DWCP_ONNXRUNTIME_LIB, or a .venv in the working directory or
// a parent. Sessions run with one intra-op thread, as the server's. The package needs cgo (a C compiler, zlib1g-dev);
// the remote client (package inference) does not. Importing it registers the Runtime as the drop-in packages'
// local runtime (inference.RegisterLocal).
package embedded
