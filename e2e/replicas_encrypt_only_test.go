package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// An encrypt-only edge of two replicas behind nginx, sharing Redis: the
// blobs of a push land on both replicas and its manifest on either, yet
// every config reaches the upstream in plaintext (the window secrets of
// the pending keys are shared in the ledger), and skopeo with the owner's
// key opens the image straight from the upstream; it is pushed twice.
func TestEncryptOnlyReplicasBehindBalancer(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ownerKey := pemFile(t, filepath.Join(dir, "owner.pem"), "PRIVATE KEY", der)
	ownerPub := pemFile(t, filepath.Join(dir, "owner.pub.pem"), "PUBLIC KEY", pder)
	rs := startReplicaSet(t, "--encrypt-only", "--recipient", "jwe:"+ownerPub)
	src, img := ociLayout(t, 4, 200_000)
	want := layerDigests(t, img)
	for _, ref := range []string{"edge/app:1", "edge/app:2"} {
		skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+rs.host()+"/"+ref)
		host := strings.TrimPrefix(strings.TrimPrefix(rs.up, "http://"), "https://")
		if got, err := decryptUpstream(t, host, ref, ownerKey); err != nil || !slices.Equal(got, want) {
			t.Fatalf("skopeo with the owner's key on %s, pushed through two replicas: %v %v", ref, got, err)
		}
	}
	split := uploadsSplit(rs.lb.requests(t))
	t.Logf("uploads whose PATCH and PUT went to different replicas: %d of %d", split.split, split.sessions)
	rs.assertNoPlaintext(t, img)
}
