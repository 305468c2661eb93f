package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	accessreq "github.com/shroud-oci/shroud/access"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
	"github.com/shroud-oci/shroud/trust"
)

const rotateUsage = `usage: shroud rotate rewrap|reencrypt|identity --repository NAME [--repository NAME]... [--checkpoint FILE] [--pace DURATION] [-- SERVE FLAGS]
       shroud rotate reencrypt --key-id ID [--reason keyCompromise] --repository NAME... [-- SERVE FLAGS]
       shroud rotate identity --repository NAME... -- --identity NEW.pem --previous-identity OLD.pem [SERVE FLAGS]

rewrap: for every manifest shroud stored in each repository, wrap its layer
keys for the recipients the repository's rule names now, and for nothing
else: a recipient taken off the rule (superseded, retired) no longer opens
the images already stored. Layer blobs are unchanged; tags move to the new
manifests; the old ones are deleted. Clients pulling through shroud see the
same digests before, during and after.

reencrypt: the same, and first every layer gets a new layer key and new
ciphertext (streamed from the upstream, decrypted, verified, encrypted
again), for a key that was compromised: wrapping the old layer keys again
would take nothing from whoever holds it. The old ciphertext is deleted
upstream, and through shroud its digests, and the old manifests', answer
410 Gone naming --key-id and --reason. Name every repository the key's
scope covers in one run: a layer two of them share is re-encrypted once.

identity: the rewrap, for a new identity (--identity) that replaces the
old one (--previous-identity, which servers keep until this job is done):
every layer key is wrapped for the new identity (and the rule's recipients),
every sealed original re-sealed with it and every pointer tag renamed as
it names them. Then drop --previous-identity from the servers and revoke
the old identity's key id like any key's.

The serve flags after -- (or --config) say what the server runs with: the
upstream, the identity, the policy with its recipients. Writes upstream use
shroud's own credentials for it (--upstream-auth-file). A killed run resumes
where it stopped when given the same --checkpoint file (default
<data-dir>/jobs/<job>.checkpoint).
`

// rotate runs a key-rotation job.
func rotate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "rewrap" && args[0] != "reencrypt" && args[0] != "identity") {
		fmt.Fprint(stderr, rotateUsage)
		return 2
	}
	job := args[0]
	fs := flag.NewFlagSet("shroud rotate "+job, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, rotateUsage) }
	var repos listFlag
	fs.Var(&repos, "repository", "repeatable: a repository to rewrap")
	checkpoint := fs.String("checkpoint", "", "the job's checkpoint file (default <data-dir>/jobs/<job>.checkpoint)")
	pace := fs.Duration("pace", 0, "at least this long between two manifests' writes upstream (0: as fast as the upstream answers)")
	keyID := fs.String("key-id", "", "reencrypt: the id of the compromised key, as the deny list names it")
	reason := fs.String("reason", "keyCompromise", "reencrypt: the revocation's reason")
	rest := args[1:]
	var serveArgs []string
	if i := slices.Index(rest, "--"); i >= 0 {
		rest, serveArgs = rest[:i], rest[i+1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || len(repos) == 0 {
		fmt.Fprintf(stderr, "shroud rotate %s: name the repositories with --repository (unexpected: %v)\n", job, fs.Args())
		return 2
	}
	spec := jobs.Spec{Kind: jobs.Kind(job), Repositories: repos, Pace: *pace}
	if job == "reencrypt" {
		if *keyID == "" {
			fmt.Fprintf(stderr, "shroud rotate reencrypt: --key-id names the compromised key (what the old digests' 410 says)\n")
			return 2
		}
		spec.KeyID, spec.Reason, spec.At = *keyID, *reason, time.Now().UTC()
	}
	if err := spec.Validate(); err != nil {
		fmt.Fprintf(stderr, "shroud rotate %s: %v\n", job, err)
		return 2
	}
	cfg, err := parseServe(serveArgs, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "shroud rotate %s: %v\n", job, err)
		return 2
	}
	log, _ := cfg.Logger(stderr) // checked by Validate
	if *checkpoint == "" {
		*checkpoint = filepath.Join(cfg.DataDir, "jobs", job+".checkpoint")
	}
	if job == "identity" && len(cfg.PreviousIdentities) == 0 {
		fmt.Fprintf(stderr, "shroud rotate identity: name the identity --identity replaces with --previous-identity (after --)\n")
		return 2
	}
	if err := runRewrap(ctx, cfg, spec, *checkpoint, stdout, log); err != nil {
		log.Error(job+" stopped", "err", err)
		fmt.Fprintf(stderr, "shroud rotate %s: %v\n", job, err)
		return 1
	}
	return 0
}

// runRewrap builds what the server would run with (keys, policy,
// upstream with shroud's own credentials, shared tier, trust documents,
// audit log) and runs the job spec describes on it (jobs.Run).
func runRewrap(ctx context.Context, cfg config.Config, spec jobs.Spec, checkpoint string, out io.Writer, log *slog.Logger) error {
	keys, err := keyring(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer keys.Close()
	pol, err := policy(cfg, keys)
	if err != nil {
		return err
	}
	upURL, stop, err := upstreamURL(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stop()
	// The job writes with shroud's own credentials: it has no client.
	def, _, err := backends(cfg, upURL, true, nil, log)
	if err != nil {
		return err
	}
	var auditLog *audit.Logger
	if cfg.AuditLog != "" {
		var closer io.Closer
		if auditLog, closer, err = audit.Open(cfg.AuditLog); err != nil {
			return err
		}
		defer closer.Close()
	}
	// With a shared tier, the job reads and writes the mappings the
	// replicas share, and the trust documents' rollback floor.
	var floor trust.SharedFloor
	if cfg.Shared.Enabled() {
		tier, err := newSharedTier(cfg.Shared, keys.Identity(), log)
		if err != nil {
			return err
		}
		defer tier.Close()
		sh, _, err := tier.store("", &def, log)
		if err != nil {
			return err
		}
		floor = sh
	}
	var keyCheck proxy.KeyChecker
	if tc, err := trustChecker(ctx, cfg, def.Upstream, pol, keys, floor, auditLog, log); err != nil {
		return err
	} else if tc != nil {
		keyCheck = tc
	}
	// The keys access requests were granted stay recipients: a rewrap
	// without them would take them back from the stored images.
	var grants proxy.Grants
	if cfg.Admin.AccessRequests {
		s, err := accessreq.Open(accessreq.Options{Dir: filepath.Join(cfg.DataDir, "access"), Keyring: keys, Policy: pol})
		if err != nil {
			return err
		}
		grants = s
	}
	h, err := proxy.New(proxy.Options{Upstream: def.Upstream, Cache: def.Cache, Keyring: keys, Policy: pol, Logger: log, Audit: auditLog, KeyCheck: keyCheck, Grants: grants})
	if err != nil {
		return err
	}
	if _, err := jobs.Run(ctx, h, spec, jobs.RunOptions{Checkpoint: checkpoint, Previous: keys.Previous(), Logger: log,
		Observer: &cliReport{out: out, checkpoint: checkpoint, label: spec.Kind.Label() + " "}}); err != nil {
		return err
	}
	for _, p := range keys.Previous() {
		fmt.Fprintf(out, "previous identity %s: nothing in these repositories needs it now; once every repository is done, drop it from the servers and retire it (shroud trust revoke --key-id %s --reason superseded)\n", p.Fingerprint(), p.KeyID())
	}
	return nil
}

// cliReport prints a job's progress and reports as `shroud rotate` has
// them: the resume, a progress bar (or lines) per repository, its report.
type cliReport struct {
	out        io.Writer
	checkpoint string
	label      string
	progress   *jobs.Progress
}

func (c *cliReport) Resumed(job string, steps int) {
	fmt.Fprintf(c.out, "resuming %s from %s: %d steps done by the killed run\n", job, c.checkpoint, steps)
}

func (c *cliReport) Repository(repo string) { c.progress = jobs.NewProgress(c.out, c.label+repo) }

func (c *cliReport) Step(p proxy.JobProgress) { c.progress.Step(p.Done, p.Total, p.Note) }

func (c *cliReport) Reported(repo string, rep proxy.JobReport, err error) {
	c.progress.Finish()
	if err != nil {
		return
	}
	fmt.Fprintf(c.out, "%s: %d manifests, %d rewritten, %d blob pointers rewritten, %d re-sealed from a previous identity, %d done by an earlier run, %d not shroud's (left alone)\n", repo, rep.Manifests, rep.Rewritten, rep.Pointers, rep.Resealed, rep.Resumed, rep.Foreign)
	for _, k := range rep.KeptOld {
		fmt.Fprintf(c.out, "%s: the upstream refused to delete %s, which the key taken away still opens: delete it there\n", repo, k)
	}
	for _, tag := range rep.Moved {
		fmt.Fprintf(c.out, "%s: tag %s moved while the job ran: left where the client pushed it\n", repo, tag)
	}
}
