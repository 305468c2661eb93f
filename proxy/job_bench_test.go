package proxy_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// BenchmarkJobs is what a key-rotation job costs against its baseline,
// measured in the same run: pulling the same images once through shroud
// (every manifest restored, every layer decrypted and read). 20 images of
// 3 layers of 1 MiB in one repository, a real registry (distribution
// v3) in the process; one op is one pass over the whole repository.
//
//	go test -run xxx -bench Jobs -benchtime 3x ./proxy/
func BenchmarkJobs(b *testing.B) {
	const images, layers, layerSize = 20, 3, 1 << 20
	up := shroudtest.Distribution(b)
	recA, _ := keyPair(b, "ec")
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "bench/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}})
	s := shroudtest.Start(b, up, pol)
	var tags []string
	for i := range images {
		img, err := random.Image(layerSize, layers)
		if err != nil {
			b.Fatal(err)
		}
		tag := fmt.Sprint(i)
		if err := remote.Write(ref(b, s.Host(), "bench/app:"+tag), img); err != nil {
			b.Fatal(err)
		}
		tags = append(tags, tag)
	}
	pull := func(b *testing.B) {
		// A server new to the images each pass: restored from the upstream.
		fresh := shroudtest.StartWithIdentity(b, up, s.Keyring, s.DataDir, pol)
		for _, tag := range tags {
			img, err := remote.Image(ref(b, fresh.Host(), "bench/app:"+tag))
			if err != nil {
				b.Fatal(err)
			}
			ls, _ := img.Layers()
			for _, l := range ls {
				rc, err := l.Compressed()
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
	}
	job := func(re bool) func(b *testing.B) {
		return func(b *testing.B) {
			o := proxy.RewrapOptions{}
			if re {
				o.Reencrypt = proxy.NewReencryption(proxy.Revocation{KeyID: "sha256:1b32c28cb38c05480eccc1bd60ff97029b57a05c96718b96dad7e9d84894f549", Reason: "keyCompromise"})
			}
			if _, err := s.Handler.Rewrap(context.Background(), "bench/app", o); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		name string
		run  func(*testing.B)
	}{{"pull-baseline", pull}, {"rewrap", job(false)}, {"reencrypt", job(true)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(images * layers * layerSize)
			for range b.N {
				c.run(b)
			}
		})
	}
}
