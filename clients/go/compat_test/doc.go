// Package compat_test is a compile test: each file uses our drop-in packages the way DWCP's code uses its own
// (novacron backend/core/network/dwcp), with DWCP's names, fields, constants and call shapes. `go vet ./...`
// and `go build ./...` compiling it is the test; its functions are never run.
package compat_test
