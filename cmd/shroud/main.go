// Command shroud is a registry reverse proxy that encrypts container image
// layers on push and decrypts them on pull.
//
//	shroud serve [--config FILE] [--listen ADDR] [--upstream URL] [--data-dir DIR]
//	             [--identity FILE] [--recipient SPEC]... [--decryption-key FILE]...
//	shroud keygen --out DIR [--type ec|rsa] [--name NAME]
//	shroud inspect [--output text|json] [--insecure] [--decryption-key FILE]... REF
//	shroud trust init|add-key|revoke|delegate|sign|status [flags]
//	shroud keyprovider [--listen ADDR] [--data-dir DIR] [--identity FILE] [--config FILE]
//	                   [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
//	                   [--insecure-no-client-auth] [--max-requests-per-client N]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: shroud <command> [flags]

commands:
  serve    run the proxy (shroud serve --help for its flags)
  keygen   write a key pair: shroud keygen --out DIR [--type ec|rsa] [--name NAME]
  trust    write and inspect the signed allow and deny lists (shroud trust help)
  inspect  show how an image is encrypted and who can open it:
           shroud inspect [--output json] [--insecure] [--decryption-key FILE]... REF
  keyprovider
           serve the ocicrypt key-provider gRPC protocol, so nodes open layer
           keys through shroud's policy without a private key (--help)
  rotate   rewrap stored images for the recipients the policy names now, or
           re-encrypt them when a key is compromised (shroud rotate --help):
           shroud rotate rewrap --repository NAME... [--checkpoint FILE] [-- SERVE FLAGS]
           shroud rotate reencrypt --key-id ID --repository NAME... [-- SERVE FLAGS]
  access   ask for a key to become a recipient, and decide such requests
           (shroud access help)
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "inspect":
		return inspect(ctx, args[1:], stdout, stderr)
	case "rotate":
		return rotate(ctx, args[1:], stdout, stderr)
	case "trust":
		return trustCmd(ctx, args[1:], stdout, stderr)
	case "access":
		return accessCmd(ctx, args[1:], stdout, stderr)
	case "keyprovider":
		return keyproviderCmd(ctx, args[1:], stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "shroud: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
