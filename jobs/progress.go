package jobs

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress reports a job's steps: on a terminal, one line redrawn in
// place with a bar; elsewhere (a log file, a pipe), a line per tenth of
// the work and one for each step that has something to say.
type Progress struct {
	w        io.Writer
	label    string
	terminal bool
	started  time.Time
	lastPct  int
	drawn    bool
}

// NewProgress reports to w, under label.
func NewProgress(w io.Writer, label string) *Progress {
	p := &Progress{w: w, label: label, started: time.Now(), lastPct: -1}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// barWidth is the bar's length on a terminal.
const barWidth = 30

// Step reports that done of total steps are done; note, if any, says
// something of the last one.
func (p *Progress) Step(done, total int, note string) {
	pct := 100
	if total > 0 {
		pct = min(100, done*100/total)
	}
	if p.terminal {
		fill := pct * barWidth / 100
		fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d %3d%% %s", p.label, strings.Repeat("=", fill), strings.Repeat(" ", barWidth-fill), done, total, pct, time.Since(p.started).Round(time.Second))
		p.drawn = true
		if note != "" {
			fmt.Fprintf(p.w, "\n  %s\n", note)
		}
		return
	}
	if note != "" {
		fmt.Fprintf(p.w, "%s: %d/%d: %s\n", p.label, done, total, note)
	}
	if pct/10 > p.lastPct/10 || p.lastPct < 0 {
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%)\n", p.label, done, total, pct)
		p.lastPct = pct
	}
}

// Finish ends the report (the terminal's line).
func (p *Progress) Finish() {
	if p.terminal && p.drawn {
		fmt.Fprintln(p.w)
	}
}
