package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/shroud-oci/shroud/trust"
)

// trustStatus runs `shroud trust status`: a repository directory as it
// stands, or what a client of an HTTPS source trusts.
func trustStatus(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory of a trust repository")
	url := fs.String("url", "", "HTTPS base URL of a trust repository (with --root)")
	root := fs.String("root", "", "initial trusted root.json for --url")
	dataDir := fs.String("data-dir", "", "data dir for --url (default: a temporary one)")
	output := fs.String("output", "text", "text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*dir == "") == (*url == "") || (*url != "" && *root == "") {
		return usagef("--dir D, or --url U with --root FILE")
	}
	var st trust.Status
	if *dir != "" {
		var err error
		if st, err = dirStatus(*dir); err != nil {
			return err
		}
	} else {
		rootData, err := os.ReadFile(*root)
		if err != nil {
			return err
		}
		src, err := trust.HTTPSource(*url, nil)
		if err != nil {
			return err
		}
		dd := *dataDir
		if dd == "" {
			if dd, err = os.MkdirTemp("", "shroud-trust-"); err != nil {
				return err
			}
			defer os.RemoveAll(dd)
		}
		c, err := trust.New(trust.Options{Source: src, Root: rootData, DataDir: dd, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		if err := c.Refresh(ctx); err != nil {
			return err
		}
		st = c.Status()
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

// dirStatus reads a repository directory as it stands (signatures are
// the clients' business: status --url checks them).
func dirStatus(dir string) (trust.Status, error) {
	repo, err := trust.OpenRepository(dir)
	if err != nil {
		return trust.Status{}, err
	}
	st := trust.Status{Source: "dir:" + dir}
	st.Roles = append(st.Roles,
		trust.RoleStatus{Name: "root.json", Version: repo.Root.Signed.Version, Expires: repo.Root.Signed.Expires},
		trust.RoleStatus{Name: "timestamp.json", Version: repo.Timestamp.Signed.Version, Expires: repo.Timestamp.Signed.Expires},
		trust.RoleStatus{Name: "snapshot.json", Version: repo.Snapshot.Signed.Version, Expires: repo.Snapshot.Signed.Expires},
	)
	names := make([]string, 0, len(repo.Roles))
	for n := range repo.Roles {
		names = append(names, n)
	}
	slices.Sort(names)
	slices.SortStableFunc(names, func(a, b string) int {
		if a == metadata.TARGETS {
			return -1
		} else if b == metadata.TARGETS {
			return 1
		}
		return 0
	})
	for _, n := range names {
		t := repo.Roles[n]
		st.Roles = append(st.Roles, trust.RoleStatus{Name: n + ".json", Version: t.Signed.Version, Expires: t.Signed.Expires})
		for _, ns := range repo.Namespaces(n) {
			a, err := repo.Recipients(ns)
			if err != nil {
				return st, err
			}
			d, err := repo.Revocations(ns)
			if err != nil {
				return st, err
			}
			for i := range a.Recipients {
				a.Recipients[i].PublicKey = ""
			}
			st.Namespaces = append(st.Namespaces, trust.NamespaceStatus{Name: ns, Role: n, Recipients: a.Recipients, Revocations: d.Revocations})
			st.Allow += len(a.Recipients)
			st.Deny += len(d.Revocations)
		}
	}
	return st, nil
}

func printStatus(w io.Writer, st trust.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "source\t%s\n", st.Source)
	if !st.LastRefresh.IsZero() {
		fmt.Fprintf(tw, "last refresh\t%s\t%s\t%s\n", st.LastRefresh.UTC().Format(time.RFC3339), st.LastOutcome, st.LastError)
	}
	for _, r := range st.Refusals {
		fmt.Fprintf(tw, "refused\t%s\n", r)
	}
	fmt.Fprintln(tw, "\nDOCUMENT\tVERSION\tEXPIRES")
	for _, r := range st.Roles {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Name, r.Version, r.Expires.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "\nLIST\tKEY\tSCHEME/REASON\tSCOPES/REVOKED AT\tVALIDITY\n")
	for _, n := range st.Namespaces {
		for _, r := range n.Recipients {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", listName(n.Name, trust.RecipientsFile), r.KeyID, r.Scheme, strings.Join(r.Scopes, ","), validity(r))
		}
		for _, r := range n.Revocations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", listName(n.Name, trust.RevocationsFile), r.KeyID, r.Reason, r.RevokedAt.UTC().Format(time.RFC3339))
		}
		if n.Kept != "" {
			fmt.Fprintf(tw, "%s\t(kept: %s)\t\t\t\n", listName(n.Name, "*"), n.Kept)
		}
	}
	fmt.Fprintf(tw, "\n%d allowed, %d revoked\n", st.Allow, st.Deny)
	tw.Flush()
}

func validity(r trust.Recipient) string {
	f := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	if r.NotBefore.IsZero() && r.NotAfter.IsZero() {
		return "-"
	}
	return f(r.NotBefore) + ".." + f(r.NotAfter)
}
