package cache

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/crypto"
)

// testIdentity returns a new identity of shroud's.
func testIdentity(t *testing.T) *crypto.Identity {
	t.Helper()
	id, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sharedKeys are the keyed hash and box the proxy derives from an
// identity for the shared tier: every replica holding id derives the same.
type sharedKeys struct {
	names *crypto.KeyedHash
	box   *crypto.Box
}

func keysOf(t *testing.T, id *crypto.Identity) sharedKeys {
	t.Helper()
	kk, err := id.DeriveKey(crypto.PurposeSharedKey)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := id.DeriveKey(crypto.PurposeSharedValue)
	if err != nil {
		t.Fatal(err)
	}
	names, err := crypto.NewKeyedHash(kk)
	if err != nil {
		t.Fatal(err)
	}
	box, err := crypto.NewBox(vk)
	if err != nil {
		t.Fatal(err)
	}
	return sharedKeys{names: names, box: box}
}

// newTestShared returns a Shared on client under k.
func newTestShared(t *testing.T, client redis.UniversalClient, k sharedKeys, opts SharedOptions) *Shared {
	t.Helper()
	s, err := NewShared(client, k.names, k.box, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ctxT is a context for one test's calls.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
