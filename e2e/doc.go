// Package e2e tests shroud with real clients (skopeo from Debian) and the
// built `shroud` binary, against real registries started on 127.0.0.1. The
// tests fail, never skip, when a tool they need is missing: .ci/run
// installs them.
package e2e
