package trust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// Source is where the trust documents come from: a go-tuf fetcher and the
// base URLs it is asked for metadata (root.json, timestamp.json...) and
// target files (the lists) under. A fetcher answers a file that is not
// there with *metadata.ErrDownloadHTTP{StatusCode: 404} (how the updater
// learns that no newer root exists) and refuses to read more than the
// maximum length it is given.
type Source struct {
	// Name says where the documents come from, for logs and status.
	Name string
	// MetadataURL and TargetsURL are the bases the updater appends
	// "<version>.root.json", "timestamp.json", "<ns>/<hash>.recipients.json"
	// to.
	MetadataURL, TargetsURL string
	// Fetcher makes the fetcher of one refresh; ctx bounds that refresh.
	Fetcher func(ctx context.Context) fetcher.Fetcher
}

// The layout of a trust repository, on disk as `shroud trust init`
// writes it, behind an HTTPS base URL, and as the file titles of the OCI
// artifact: metadata/ holds root (every version, "<n>.root.json"),
// timestamp.json, and the snapshot and targets roles by version
// ("<n>.snapshot.json", consistent snapshots); targets/ holds the lists,
// hash-prefixed ("team-a/<sha256>.recipients.json").
const (
	metadataDir = "metadata"
	targetsDir  = "targets"
)

// fetchFunc is a fetcher.Fetcher made of a function, so a fetcher can
// carry the context of the refresh it serves without storing it.
type fetchFunc func(urlPath string, maxLength int64) ([]byte, error)

func (f fetchFunc) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	return f(urlPath, maxLength)
}

func notFound(name string) error {
	return &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: name}
}

func tooLong(name string, n, maxLength int64) error {
	return &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: %d bytes exceed the maximum of %d", name, n, maxLength)}
}

// DirSource reads a trust repository from a directory (as `shroud trust
// init` writes it). Reads stay inside dir whatever the names asked for.
func DirSource(dir string) (Source, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return Source{}, fmt.Errorf("trust source: %w", err)
	}
	if !st.IsDir() {
		return Source{}, fmt.Errorf("trust source %s: not a directory", dir)
	}
	return Source{
		Name:        "dir:" + dir,
		MetadataURL: metadataDir + "/",
		TargetsURL:  targetsDir + "/",
		Fetcher: func(ctx context.Context) fetcher.Fetcher {
			return fetchFunc(func(name string, maxLength int64) ([]byte, error) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				return readDirFile(dir, name, maxLength)
			})
		},
	}, nil
}

func readDirFile(dir, name string, maxLength int64) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("trust source: %w", err)
	}
	defer root.Close()
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("trust source: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLength+1))
	if err != nil {
		return nil, fmt.Errorf("trust source: read %s: %w", name, err)
	}
	if int64(len(data)) > maxLength {
		return nil, tooLong(name, int64(len(data)), maxLength)
	}
	return data, nil
}

// HTTPSource reads a trust repository served over HTTPS at base
// (base/metadata/..., base/targets/...) with go-tuf's default fetcher.
// client is the HTTP client to use (nil: one with a 30s timeout); each
// request carries the refresh's context.
func HTTPSource(base string, client *http.Client) (Source, error) {
	u, err := url.Parse(base)
	if err != nil {
		return Source{}, fmt.Errorf("trust source: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return Source{}, fmt.Errorf("trust source %q: want an https:// URL", base)
	}
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	base = strings.TrimSuffix(base, "/")
	return Source{
		Name:        base,
		MetadataURL: base + "/" + metadataDir + "/",
		TargetsURL:  base + "/" + targetsDir + "/",
		Fetcher: func(ctx context.Context) fetcher.Fetcher {
			f := fetcher.NewDefaultFetcher()
			f.SetHTTPUserAgent("shroud")
			f.SetHTTPClient(doFunc(func(req *http.Request) (*http.Response, error) {
				return client.Do(req.WithContext(ctx))
			}))
			return f
		},
	}, nil
}

// doFunc is the HTTP client go-tuf's default fetcher takes, as a function
// (so that it carries the refresh's context).
type doFunc func(*http.Request) (*http.Response, error)

func (f doFunc) Do(req *http.Request) (*http.Response, error) { return f(req) }
