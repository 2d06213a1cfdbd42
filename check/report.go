package check

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"unicode"
)

// Report is the check of several URLs, as `ferry check --json` prints it.
type Report struct {
	OK      bool     `json:"ok"` // every URL passed
	Results []Result `json:"results"`
}

// RunAll checks the targets one after the other (so that timings are not shared) and
// reports them in order.
func RunAll(ctx context.Context, targets []Target, o Options) Report {
	rep := Report{OK: len(targets) > 0, Results: []Result{}}
	for _, t := range targets {
		res := Run(ctx, t, o)
		rep.OK = rep.OK && res.OK
		rep.Results = append(rep.Results, res)
	}
	return rep
}

// Failures returns one line per failed URL: "<url>: <step>: <why>".
func (r Report) Failures() []string {
	var out []string
	for _, res := range r.Results {
		if !res.OK {
			out = append(out, printable(res.URL)+": "+res.Failure)
		}
	}
	return out
}

// WriteTable prints the report as a table: one row per step, with its time and what it
// found, the URL on its first row.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "URL\tSTEP\tRESULT\tTIME\tDETAIL")
	for _, res := range r.Results {
		url := printable(res.URL)
		for _, s := range res.Steps {
			result, detail := "ok", s.Detail
			if !s.OK {
				result, detail = "FAIL", s.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%8.1f ms\t%s\n", url, s.Name, result, s.Millis, detail)
			url = ""
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	passed := 0
	for _, res := range r.Results {
		if res.OK {
			passed++
		}
	}
	_, err := fmt.Fprintf(w, "\n%d of %d URLs passed\n", passed, len(r.Results))
	return err
}

// printable quotes s when it holds anything but printable characters, so that a report
// line stays one line.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
