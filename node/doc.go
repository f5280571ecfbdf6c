// Package node is patchmesh's composition root: it turns a Config into a
// running node — store, blob driver, authenticator, HTTP API and listener —
// and runs it until its context ends, then drains and closes everything in
// order.
//
// It owns configuration (defaults, the YAML file, PATCHMESH_* environment
// variables, validation) and the node's lifecycle. It holds no business
// rules: those live in catalog, auth and api, and persistence in store and
// blob. The command line lives in cmd/patchmesh.
package node
