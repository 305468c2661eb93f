// Package trust decides whether shroud may wrap a layer key for a key
// (push) or unwrap with it (pull), from signed trust documents: an allow
// list (recipients) and a deny list (revocations) published as the target
// files of a TUF repository (go-tuf v2), as the Notary Project's
// key-revocation requirements describe: keys expire, a deny list revokes
// at any time and is authentic and timely, an offline root delegates to
// expiring online keys per repository scope.
//
// # Documents and their names
//
// The TUF repository has an offline root (a threshold of keys), and
// targets, snapshot and timestamp roles (online, short-lived). Its target
// files are the lists, one pair per namespace:
//
//	recipients.json, revocations.json                 namespace "": every repository
//	team-a/recipients.json, team-a/revocations.json   namespace team-a: repositories team-a/**
//
// Who may sign a namespace's lists is TUF's business: the role go-tuf's
// delegation walk resolves for the path "<ns>/recipients.json". A
// delegated role with paths ["team-a/*"] (a TUF path pattern: "*" within
// one segment) may therefore sign team-a's lists, and a list it signs
// counts only for repositories under team-a/: an entry whose scopes reach
// beyond ("team-b/**", "**") counts for the part under team-a/ only, and
// the refresh reports it. A role listing team-b/recipients.json without
// being delegated that path is never consulted for it. shroud finds the
// namespaces to look up from the delegations' paths: a pattern
// "<ns>/<last>" whose directory is literal and whose last segment matches
// recipients.json or revocations.json names namespace ns (nested
// delegations too: team-a may delegate "team-a/prod/*", provided its own
// delegation covers that path, "team-a/*/*"). Patterns with a glob in the
// directory ("team-*/*") and hash-bin delegations name no namespace and
// are reported, not looked up.
//
// Key ids are "sha256:<hex>" of the SPKI DER (jwe; pkcs7: of the
// certificate's public key), "pgp:<UPPER HEX fingerprint>" (40 digits for v4 keys, 64 for v6),
// "pkcs11:<path attributes>", "provider:<name>", as package crypto names
// the keys it holds.
//
// # Decisions
//
// Check(ctx, op, repo, keyID, now) answers nil or a *Refusal naming the
// operation, repository, key, reason and the document it rests on:
//
//   - revoked: a deny entry of a namespace covering repo; both operations,
//     whatever any allow entry says, whatever its revoked_at;
//   - frozen: a document the decision rests on is expired at now (below);
//   - not-allowed (wrap only): no allow entry for the key whose scopes
//     match repo. Unwrapping with a key the allow list does not name is
//     allowed: decryption keys are configured locally, and the allow list
//     says whom shroud encrypts for;
//   - expired, not-yet-valid: the key's allow entries for repo are all
//     outside not_before..not_after (wrap, and unwrap with a listed key).
//
// repo may also be the scope shroud keyprovider binds a wrap to: a
// repository glob ("team-*/app") or "" (no repository). A scope is
// governed by the deny lists and freezes of every namespace whose
// repositories it may match (repoglob.MayOverlap against "<ns>/**", the
// overlap test the key provider's deny rules use), "" by every
// namespace: a key revoked for team-a cannot be used through a scope
// that merely does not begin with "team-a/". Fail closed: a glob that
// cannot reach team-a but shares its literal prefix ("team-*") is
// refused too. The unwrap grace is the one Options.Grace gives the scope.
//
// # Freshness and freeze
//
// The decisions use the last state a refresh accepted, in memory (and
// restored from the data dir on start-up, as of the last refresh's
// reference time). A failed refresh keeps it. When root, timestamp,
// snapshot or targets of that state, or a delegated role a repository's
// lists rest on (the signing role and its delegators), is expired at now,
// decisions for that repository are frozen: wrapping is refused at once,
// unwrapping once Options.Grace(repo) (default 0) has passed too. Before
// any refresh succeeded, everything is frozen. A freeze is reported once
// per document and expiry (log at error level and an EventFreeze), and
// each refusal names the document and its expiry.
//
// # What go-tuf gives, and what is added on top
//
// go-tuf's updater (run by Refresh; its reference time is set with
// UnsafeSetRefTime from Options.Clock, so tests inject the clock) gives
// the TUF client workflow: signature thresholds (a key listed under two
// ids counts once), root rotation one version at a time, rollback
// protection of timestamp, snapshot and targets against the metadata
// persisted in <datadir>/trust/metadata (the rollback floor, which
// survives restarts), freeze (expired metadata refused), fast-forward
// recovery when root rotates a key, maximum lengths, length and hash of
// every list checked against its signed target info, and the delegation
// walk. The initial root is the operator's file (Options.Root), used only
// while the data dir holds none.
//
// On top, shroud adds:
//
//   - deny entries are never dropped: every deny entry ever trusted is
//     kept in <datadir>/trust/revocations-floor.json and stays in force; a
//     newer deny list lacking one (or a namespace whose deny list
//     disappears) is refused, loudly, and the previously trusted lists of
//     that namespace stay;
//   - per-namespace fallback: a namespace whose new lists fail (a role
//     that does not verify or is expired, a list over Limits.List, one that
//     does not parse, a dropped deny entry) keeps the lists trusted
//     before, as fresh as the timestamp that vouched for them (they freeze
//     when it expires); with nothing trusted before, the namespace is
//     frozen until its lists verify. Other namespaces refresh normally;
//   - equivocation: go-tuf silently keeps its timestamp when the source
//     offers another of the same version; shroud reports a validly signed
//     one that differs as refused. (TUF cannot tell one client that
//     another was shown a different version; the OCI source makes every
//     replica read the same artifact.)
//   - the lists are parsed strictly (unknown fields are an error: a
//     misspelt not_after must not make a key eternal);
//   - every refresh outcome goes to Options.OnEvent (versions, outcome,
//     error, refusals; key ids, never key material).
//
// # Sources
//
// DirSource reads a directory as `shroud trust init` writes it;
// HTTPSource an HTTPS base URL with go-tuf's default fetcher (Run
// refreshes on an interval); OCISource an OCI artifact in the upstream
// registry, through a RegistryFetch the proxy supplies. Repository writes
// the documents (`shroud trust`, and the tests).
package trust
