package proxy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }
