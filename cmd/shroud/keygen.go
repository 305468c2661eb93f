package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shroud-oci/shroud/crypto"
)

// keygen writes a key pair: shroud's identity or a recipient's.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shroud keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write the key pair to (required)")
	kind := fs.String("type", "ec", "key type: ec (P-256) or rsa (3072 bits)")
	name := fs.String("name", "identity", "file name stem: <out>/<name>.pem and <out>/<name>.pub.pem")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: shroud keygen --out DIR [--type ec|rsa] [--name NAME]")
		return 2
	}
	priv, pub, err := crypto.GenerateKeyPair(*kind)
	if err != nil {
		fmt.Fprintf(stderr, "shroud keygen: %v\n", err)
		return 2
	}
	privPath, pubPath := filepath.Join(*out, *name+".pem"), filepath.Join(*out, *name+".pub.pem")
	if err := writeKeyPair(*out, privPath, pubPath, priv, pub); err != nil {
		fmt.Fprintf(stderr, "shroud keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "private key: %s (keep it secret; --identity or --decryption-key)\npublic key:  %s (recipient jwe:%s)\n", privPath, pubPath, pubPath)
	return 0
}

// writeKeyPair writes the private key (0600) and public key, refusing to
// overwrite either.
func writeKeyPair(dir, privPath, pubPath string, priv, pub []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{privPath, priv, 0o600}, {pubPath, pub, 0o644}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return fmt.Errorf("%w (not overwriting a key)", err)
		}
		if _, err := fh.Write(f.data); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return err
		}
	}
	return nil
}
