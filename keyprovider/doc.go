// Package keyprovider is shroud serving ocicrypt's key-provider gRPC
// protocol (KeyProviderService: WrapKey, UnWrapKey, carrying the JSON
// KeyProviderKeyWrapProtocolInput and Output), so that a node's
// containerd (imgcrypt's ctd-decoder, or anything using ocicrypt with
// OCICRYPT_KEYPROVIDER_CONFIG) opens the layers shroud encrypted for the
// recipient provider:<name> without holding any private key.
//
// WrapKey encrypts the layer's private options to shroud's identity
// (crypto.Identity.WrapOptions), binding the repository scope the
// recipient's argument names (provider:shroud:<repository or glob>).
// UnWrapKey opens them only when, in order: the caller presented a
// client certificate the server's CA verifies (when the server requires
// one), the wrap opens with the identity, the bound scope falls under no
// deny rule of the policy (fail closed: an unbound wrap is refused when
// the policy has a deny rule, a scope no rule matches is refused), and
// the trust documents neither revoke the identity's key nor are frozen
// for any namespace the scope may reach (trust.Checker fails closed as
// the deny rules do: a glob is checked against every namespace it may
// overlap, an unbound wrap against all).
//
// Every refusal is a gRPC PermissionDenied (InvalidArgument for a
// malformed request or a wrap not made for the identity, Unauthenticated
// without a client certificate, ResourceExhausted past the bound per
// client) whose message names the scope and the reason only ("unwrap
// refused by policy for scope ..."): the deny rule, the trust document
// and the revocation reason go to the log and the audit log, never to
// the caller. Every unwrap is audited, opened (unwrap-allowed) or
// refused (unwrap-refused), with the scope, the identity's key id and
// the caller (its certificate's subject and SHA-256 fingerprint, or its
// address), never key material.
//
// Every input is bounded (MaxRequest, crypto.MaxProviderWrapped,
// crypto.MaxProviderOptions, MaxScope), and so is each client: at most
// Options.MaxPerClient requests in flight per client certificate (per
// IP address without one); one more waits a second for a slot, then is
// refused.
package keyprovider
