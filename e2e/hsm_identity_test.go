package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/internal/softhsm"
)

// Issue 12 item 4, keys that never touch shroud's disk: the shroud binary
// with its identity in a SoftHSM2 token (--identity pkcs11:<key file>),
// skopeo in and out through it in front of distribution v3. The images
// round-trip byte for byte; the registry holds no plaintext layer and the
// data dir no private key; after a restart with the same token the images
// still open, by tag and by digest (the pointer names are derived from the
// token's key, so they must come out the same); a wrong PIN, a token, a
// key pair or a module that is not there stops the start-up with one
// error line naming the key file, before listening and with the data dir
// as it was, and the next correct start serves everything still.
func TestHSMIdentity(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	_, keyFile, key := softhsm.TokenKey(t, 2048, true)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	modules := filepath.Join(dir, "pkcs11.yaml")
	writeFile(t, modules, "pkcs11:\n  allowed-module-paths: ["+softhsm.Module+"]\n")
	withIdentity := filepath.Join(dir, "shroud.yaml")
	writeFile(t, withIdentity, "identity: pkcs11:"+keyFile+"\npkcs11:\n  allowed-module-paths: ["+softhsm.Module+"]\n")

	// First start: the config file's identity key.
	addr, cmd, logs := startShroud(t, bin, "--config", withIdentity, "--data-dir", data, "--upstream", up.URL)
	if !strings.Contains(logs.String(), "identity in a PKCS#11 token") || strings.Contains(logs.String(), "generated a new identity") {
		t.Fatalf("start-up log does not say the identity is in the token:\n%s", logs)
	}
	src, img := ociLayout(t, 4, 300_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/hsm/app:1")
	raw := pullSame(t, addr, "hsm/app:1", img)

	raw2 := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+up.Host()+"/hsm/app:1")
	if strings.Count(raw2, "+encrypted") != 4 {
		t.Fatalf("upstream manifest does not have 4 encrypted layers:\n%s", raw2)
	}
	assertNoPlaintextIn(t, up.Dir, img)
	// shroud inspect with the token identity (and its config's modules)
	// opens every layer straight from the registry.
	out, err := exec.Command(bin, "inspect", "--output", "json", "--insecure", "--config", withIdentity, up.Host()+"/hsm/app:1").Output()
	var rep inspectJSON
	if err != nil || json.Unmarshal(out, &rep) != nil || len(rep.Images) != 1 || len(rep.Images[0].Layers) != 4 {
		t.Fatalf("shroud inspect with the token identity: %v\n%s", err, out)
	}
	for _, l := range rep.Images[0].Layers {
		if !l.Encrypted || !l.Openable || !strings.HasPrefix(l.OpenedBy, "shroud identity ") {
			t.Fatalf("shroud inspect with the token identity: layer %+v, want it opened by the identity", l)
		}
	}
	assertNoPrivateKey(t, data, key)
	assertNoPrivateKey(t, up.Dir, key)
	if _, err := os.Stat(filepath.Join(data, "identity.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data dir identity.pem with a token identity: %v", err)
	}
	stopCleanly(t, cmd, logs)

	// Restart with the flag (the config naming the modules alone): the
	// same token key derives the same keys, and by-digest pulls find the
	// sealed originals through the pointers named with them.
	serve := func() (string, *exec.Cmd, *syncBuffer) {
		return startShroud(t, bin, "--config", modules, "--identity", "pkcs11:"+keyFile, "--data-dir", data, "--upstream", up.URL)
	}
	addr, cmd, logs = serve()
	d := digestOf(t, img)
	if got := pullSame(t, addr, "hsm/app@"+d, img); !bytes.Equal(got, raw) {
		t.Fatal("by-digest pull after the restart changed the manifest")
	}
	pullSame(t, addr, "hsm/app:1", img)
	stopCleanly(t, cmd, logs)
	assertNoPrivateKey(t, data, key)

	// Which is the token key's doing: another token's key, with the same
	// data dir's state, opens none of it.
	_, otherKey, _ := softhsm.TokenKey(t, 2048, true)
	other, ocmd, ologs := startShroud(t, bin, "--config", modules, "--identity", "pkcs11:"+otherKey, "--data-dir", data, "--upstream", up.URL)
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "docker://"+other+"/hsm/app@"+d, "oci:"+filepath.Join(t.TempDir(), "o")+":app"); err == nil {
		t.Fatalf("a shroud with another token's key pulled the image by digest:\n%s", out)
	}
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "docker://"+other+"/hsm/app:1", "oci:"+filepath.Join(t.TempDir(), "o")+":app"); err == nil {
		t.Fatalf("a shroud with another token's key pulled the image:\n%s", out)
	}
	stopCleanly(t, ocmd, ologs)

	// Start-up failures: one error line each, nothing listening, the data
	// dir as it was.
	orig, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(old, new string) string {
		p := filepath.Join(t.TempDir(), "key.yaml")
		if !strings.Contains(string(orig), old) {
			t.Fatalf("key file has no %q:\n%s", old, orig)
		}
		writeFile(t, p, strings.Replace(string(orig), old, new, 1))
		return p
	}
	empty := filepath.Join(dir, "empty.yaml")
	writeFile(t, empty, "log-level: info\n")
	before := snapshotDir(t, data)
	for _, c := range []struct {
		name, keyFile, config, want string
	}{
		{"wrong PIN", variant("pin-value=1234", "pin-value=9876"), modules, "PIN_INCORRECT"},
		{"no such token", variant("token=shroud", "token=absent"), modules, `token \"absent\"`},
		{"no such key pair", variant("object=ops", "object=absent"), modules, `object=\"absent\"`},
		{"module not allowed", keyFile, empty, "allowed-module-paths"},
	} {
		t.Run(c.name, func(t *testing.T) {
			listen := freeAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "serve", "--listen", listen, "--config", c.config, "--identity", "pkcs11:"+c.keyFile,
				"--data-dir", data, "--upstream", up.URL).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("shroud serve with %s: %v, want a non-zero exit\n%s", c.name, err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], c.keyFile) || !strings.Contains(lines[0], c.want) {
				t.Fatalf("shroud serve with %s: want one error line naming %s and %q, got:\n%s", c.name, c.keyFile, c.want, out)
			}
			if strings.Contains(string(out), "9876") || strings.Contains(string(out), "1234") {
				t.Fatalf("the error holds the PIN:\n%s", out)
			}
			t.Logf("%s: %s", c.name, lines[0])
		})
	}
	if after := snapshotDir(t, data); !bytes.Equal(before, after) {
		t.Fatal("a failed start-up changed the data dir")
	}

	// And a correct start loses nothing.
	addr, _, _ = serve()
	pullSame(t, addr, "hsm/app@"+d, img)
	pullSame(t, addr, "hsm/app:1", img)
}

// Moving a deployment's identity from its data dir's key file into a
// token: `shroud rotate identity` with the token identity as --identity
// and the key file as --previous-identity, then a shroud holding the token
// identity alone (and another data dir) serves every image by tag and by
// digest, and skopeo with the old key file opens nothing upstream.
func TestHSMIdentityRotateIntoToken(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	_, keyFile, key := softhsm.TokenKey(t, 2048, true)
	dir := t.TempDir()
	modules := filepath.Join(dir, "pkcs11.yaml")
	writeFile(t, modules, "pkcs11:\n  allowed-module-paths: ["+softhsm.Module+"]\n")
	data := filepath.Join(dir, "data")
	addr, cmd, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data)
	src, img := ociLayout(t, 2, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/hsm/rotated:1")
	stopCleanly(t, cmd, logs)
	oldID := filepath.Join(data, "identity.pem")
	openUpstream := func() (string, error) {
		return skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", oldID,
			"docker://"+up.Host()+"/hsm/rotated:1", "oci:"+filepath.Join(t.TempDir(), "dec")+":app")
	}
	if out, err := openUpstream(); err != nil {
		t.Fatalf("before the rotation, skopeo with the key file: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "rotate", "identity", "--repository", "hsm/rotated", "--",
		"--upstream", up.URL, "--data-dir", data, "--config", modules, "--identity", "pkcs11:"+keyFile, "--previous-identity", oldID).CombinedOutput()
	t.Logf("shroud rotate identity:\n%s", out)
	if err != nil || !strings.Contains(string(out), "re-sealed from a previous identity") {
		t.Fatalf("shroud rotate identity into the token: %v", err)
	}
	if out, err := openUpstream(); err == nil {
		t.Fatalf("after the rotation, skopeo with the old key file still decrypts the image:\n%s", out)
	}
	fresh := filepath.Join(dir, "fresh")
	addr, _, _ = startShroud(t, bin, "--upstream", up.URL, "--data-dir", fresh, "--config", modules, "--identity", "pkcs11:"+keyFile)
	pullSame(t, addr, "hsm/rotated@"+digestOf(t, img), img)
	pullSame(t, addr, "hsm/rotated:1", img)
	assertNoPrivateKey(t, fresh, key)
}

// What a token identity costs: a push and a pull of 3 layers of 8 MiB
// (and of 10 small ones, where the token's part weighs more) through
// shroud with its identity in a SoftHSM2 token against the same with an
// RSA key file of the same size, in one run. Every token operation opens
// a session of its own (module load, login, key lookup); a manifest push
// unwraps each layer key (to rewrap it) and signs the seal, a pull opens
// the seal and unwraps each layer key. No timed assertion: the ratios are
// logged.
func TestHSMIdentityCost(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	_, keyFile, _ := softhsm.TokenKey(t, 2048, true)
	dir := t.TempDir()
	modules := filepath.Join(dir, "pkcs11.yaml")
	writeFile(t, modules, "pkcs11:\n  allowed-module-paths: ["+softhsm.Module+"]\n")
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pemKey := pemFile(t, filepath.Join(dir, "rsa.pem"), "PRIVATE KEY", der)
	token, _, _ := startShroud(t, bin, "--config", modules, "--identity", "pkcs11:"+keyFile, "--data-dir", filepath.Join(dir, "token"), "--upstream", up.URL)
	file, _, _ := startShroud(t, bin, "--identity", pemKey, "--data-dir", filepath.Join(dir, "file"), "--upstream", up.URL)

	const rounds = 3
	addrs, names := [2]string{token, file}, [2]string{"token", "file"}
	for _, shape := range []struct {
		layers int
		size   int64
		name   string
	}{{3, 8 << 20, "3 x 8 MiB"}, {10, 16 << 10, "10 x 16 KiB"}} {
		var took [2]time.Duration
		for i := range rounds {
			order := []int{0, 1}
			if i%2 == 1 { // neither goes first every time
				order = []int{1, 0}
			}
			for _, j := range order {
				src, img := ociLayout(t, shape.layers, shape.size)
				repo := fmt.Sprintf("%s/app%d:%d", names[j], shape.layers, i)
				start := time.Now()
				skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addrs[j]+"/"+repo)
				out := skopeoPull(t, addrs[j], repo)
				took[j] += time.Since(start)
				assertPulled(t, out, repo, img)
			}
		}
		line := fmt.Sprintf("token identity cost: push+pull of %s layers through shroud, mean of %d: token identity %v, RSA-2048 key file %v, ratio %.2f",
			shape.name, rounds, (took[0] / rounds).Round(time.Millisecond), (took[1] / rounds).Round(time.Millisecond), float64(took[0])/float64(took[1]))
		t.Log(line)
		summarize(line)
	}
}

// pullSame pulls ref from shroud at addr with skopeo and checks it is img
// (assertPulled). It returns the manifest.
func pullSame(t *testing.T, addr, ref string, img v1.Image) []byte {
	t.Helper()
	return assertPulled(t, skopeoPull(t, addr, ref), ref, img)
}

// skopeoPull copies ref from shroud at addr to a new OCI layout.
func skopeoPull(t *testing.T, addr, ref string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/"+ref, "oci:"+out+":app")
	return out
}

// assertPulled checks that the layout out holds img, pulled as ref: the
// manifest bytes and every layer's bytes. It returns the manifest.
func assertPulled(t *testing.T, out, ref string, img v1.Image) []byte {
	t.Helper()
	raw, m := layoutManifest(t, out)
	if want, _ := img.RawManifest(); !bytes.Equal(raw, want) {
		t.Fatalf("%s through shroud: manifest %.300s, want %.300s", ref, raw, want)
	}
	if got, want := manifestLayerDigests(m), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("%s: layers %v, want %v", ref, got, want)
	}
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		rc, _ := l.Compressed()
		var want bytes.Buffer
		want.ReadFrom(rc)
		rc.Close()
		if !bytes.Equal(layoutBlob(t, out, d.String()), want.Bytes()) {
			t.Fatalf("%s: layer %s came back with other bytes", ref, d)
		}
	}
	return raw
}

// stopCleanly stops a shroud with SIGTERM and waits for a clean exit.
func stopCleanly(t *testing.T, cmd *exec.Cmd, logs *syncBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("shroud did not exit cleanly on SIGTERM: %v\n%s", err, logs)
	}
}

// assertNoPlaintextIn reads every file under dir for the start of each of
// img's layers.
func assertNoPlaintextIn(t *testing.T, dir string, img v1.Image) {
	t.Helper()
	prefixes := layerPrefixes(t, img)
	files := 0
	walkFiles(t, dir, func(p string, b []byte) {
		files++
		for _, pre := range prefixes {
			if bytes.Contains(b, pre) {
				t.Errorf("%s holds a plaintext layer", p)
			}
		}
	})
	if files == 0 {
		t.Fatalf("no file under %s", dir)
	}
}

// assertNoPrivateKey reads every file under dir for a private key.
func assertNoPrivateKey(t *testing.T, dir string, key *rsa.PrivateKey) {
	t.Helper()
	for _, f := range privateKeyFindings(t, dir, key) {
		t.Error(f)
	}
}

// privateKeyFindings are the files under dir that hold any PEM private key
// block, or key's PKCS#8 or PKCS#1 encoding, private exponent or primes.
func privateKeyFindings(t *testing.T, dir string, key *rsa.PrivateKey) []string {
	t.Helper()
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	needles := map[string][]byte{
		"a PEM private key":        []byte("PRIVATE KEY"),
		"the key's PKCS#8 DER":     pkcs8,
		"the key's PKCS#1 DER":     x509.MarshalPKCS1PrivateKey(key),
		"the key's exponent d":     key.D.Bytes(),
		"the key's first prime p":  key.Primes[0].Bytes(),
		"the key's second prime q": key.Primes[1].Bytes(),
	}
	var out []string
	walkFiles(t, dir, func(p string, b []byte) {
		for what, n := range needles {
			if bytes.Contains(b, n) {
				out = append(out, p+" holds "+what)
			}
		}
	})
	return out
}

// The private key scan finds a key where one is, in each form it looks
// for, so that finding none means something.
func TestHSMKeyScanSeesKeys(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	for name, b := range map[string][]byte{
		"pem":    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		"pkcs8":  append(append([]byte("head"), pkcs8...), "tail"...),
		"d only": k.D.Bytes(),
	} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
		writeFile(t, filepath.Join(dir, "sub", "f"), string(b))
		if len(privateKeyFindings(t, dir, k)) == 0 {
			t.Errorf("%s: the scan found no key in a file holding one", name)
		}
	}
	if f := privateKeyFindings(t, t.TempDir(), k); len(f) != 0 {
		t.Errorf("findings in an empty dir: %v", f)
	}
}

// walkFiles calls f with each regular file under dir and its bytes.
func walkFiles(t *testing.T, dir string, f func(path string, b []byte)) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f(p, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// snapshotDir is every entry under dir: path, mode, size, time and bytes.
func snapshotDir(t *testing.T, dir string) []byte {
	t.Helper()
	var out bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out.WriteString(p + " " + info.Mode().String() + " " + info.ModTime().String() + "\n")
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
