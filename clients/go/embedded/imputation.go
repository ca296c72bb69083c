package embedded

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dwcp/inference/clients/go/internal/imputation"
)

// Imputation returns the imputation section of model's version (version "": the version a call without a
// selector answers with when the policy has no split: stable, else the newest), for the drop-ins to send
// in place of the fields their callers do not measure. A version exported before the section has an empty one.
func (r *Runtime) Imputation(model, version string) (string, imputation.Table, error) {
	e := r.snap.Load().models[model]
	if e == nil || len(e.versions) == 0 {
		return "", nil, notLoaded{statusNotLoaded(model)}
	}
	v := e.versions[version]
	if version == "" {
		if v = e.versions[e.policy.Labels["stable"]]; v == nil {
			v = e.versions[e.highest()]
		}
	}
	if v == nil {
		return "", nil, notLoaded{statusNotLoaded(model)}
	}
	t := v.meta.Imputation
	if t == nil {
		t = imputation.Table{}
	}
	return v.meta.Version, t, nil
}

var _ imputation.Local = (*Runtime)(nil)

func statusNotLoaded(model string) *status.Status {
	return status.Newf(codes.Unavailable, "model %s: no valid version is loaded", model)
}
