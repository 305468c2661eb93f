package main

import (
	"io"
	"strings"
	"testing"
)

// TestAttackKeyproviderServesTheNetworkWithoutClientAuth: an operator
// runs `shroud keyprovider --listen :50051` (or 0.0.0.0, or the node's
// address) so the nodes can reach it, and forgets --client-ca: anyone on
// the network asks it to unwrap every layer key it can name. It must
// refuse to start unless --insecure-no-client-auth says so; on loopback
// (the node's own key provider) and with --client-ca it starts.
func TestAttackKeyproviderServesTheNetworkWithoutClientAuth(t *testing.T) {
	for _, listen := range []string{":50051", "0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "kp.example.com:50051"} {
		_, err := parseKeyprovider([]string{"--listen", listen}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--client-ca") {
			t.Errorf("--listen %s without --client-ca: %v; want a refusal naming --client-ca", listen, err)
		}
		_, err = parseKeyprovider([]string{"--listen", listen, "--tls-cert", "c", "--tls-key", "k"}, io.Discard)
		if err == nil {
			t.Errorf("--listen %s over TLS without --client-ca: started", listen)
		}
	}
	for _, listen := range []string{"127.0.0.1:50051", "[::1]:50051", "localhost:50051", "127.0.0.2:1"} {
		if _, err := parseKeyprovider([]string{"--listen", listen}, io.Discard); err != nil {
			t.Errorf("--listen %s: %v", listen, err)
		}
	}
}
