// Package signtools pins the signature clients shroud is tested with and
// holds the notation-go test: a module of its own so that oras, cosign
// and notation-go (sigstore, the cloud KMS clients, the Notary libraries)
// stay out of shroud's go.mod.
//
// The e2e package builds oras and cosign from this module's tool
// directives (`go build -p 1 oras.land/oras/cmd/oras
// github.com/sigstore/cosign/v2/cmd/cosign` here) and runs this
// module's tests (`cd internal/signtools && go test ./...`), which sign
// and verify an image through shroud with notation-go.
package signtools
