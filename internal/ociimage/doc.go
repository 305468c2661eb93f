// Package ociimage builds shroud's container image: given the static
// binary's bytes and the build's metadata, a v1.Image of one layer, the
// same bytes (and digest) for the same inputs. It writes no OCI JSON of
// its own: go-containerregistry's mutate, empty and tarball do.
package ociimage
