package site_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
	"github.com/flotilla-dev/flotilla/pkg/site"
)

// BenchmarkConvergeAfterOutage measures, after a site's link was down
// 3 s, 30 s and 5 min (FLOTILLA_BENCH_OUTAGES, comma-separated, to
// choose) while 100 releases and 5 reports were made, how long after the
// link returns the newest release is at the site and the reports at the
// hub: with the hub re-adding the sources (what the dispatcher does) and,
// side by side, with the server's own source retry alone. Each outage
// runs once per variant (it lasts its length); goal: within 1 s.
func BenchmarkConvergeAfterOutage(b *testing.B) {
	outages := []time.Duration{3 * time.Second, 30 * time.Second, 5 * time.Minute}
	if v := os.Getenv("FLOTILLA_BENCH_OUTAGES"); v != "" {
		outages = nil
		for _, s := range strings.Split(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				b.Fatalf("FLOTILLA_BENCH_OUTAGES: %v", err)
			}
			outages = append(outages, d)
		}
	}
	// The testing package runs a benchmark again with the -benchtime
	// count: an outage measured once is reported again, not waited again.
	type result struct{ work, status time.Duration }
	measured := map[string]result{}
	for _, outage := range outages {
		for _, v := range []struct {
			name  string
			leave bool
		}{{"re-add", false}, {"server-retry", true}} {
			name := fmt.Sprintf("outage=%v/%s", outage, v.name)
			b.Run(name, func(b *testing.B) {
				r, ok := measured[name]
				if !ok {
					r.work, r.status = converge(b, outage, site.Options{LeaveSources: v.leave})
					measured[name] = r
				}
				work, status := r.work, r.status
				b.ReportMetric(work.Seconds(), "s-work-at-site")
				b.ReportMetric(status.Seconds(), "s-reports-at-hub")
				b.Logf("outage %v, %s: newest of 100 releases at the site %v, 5 reports at the hub %v after reconnect",
					outage, v.name, work.Round(time.Millisecond), status.Round(time.Millisecond))
			})
		}
	}
}

// converge runs one outage and returns the catch-up times.
func converge(b *testing.B, outage time.Duration, o site.Options) (work, status time.Duration) {
	bed := newBedWith(b, o, "edge-1")
	ctx := b.Context()
	bed.publishWork(b, "edge-1", "app", "r0")
	wait(b, 10*time.Second, func() bool { return bed.siteWork(ctx, "edge-1", "app") == "r0" })
	bed.link.Down(linkproxy.Reset)
	wait(b, 10*time.Second, func() bool { up, _, _ := bed.sites.Link("edge"); return !up })
	for i := 1; i <= 100; i++ {
		bed.publishWork(b, "edge-1", "app", fmt.Sprintf("r%d", i))
	}
	for i := 1; i <= 5; i++ {
		bed.report(b, "edge-1", fmt.Sprintf("s%d", i))
	}
	time.Sleep(outage)
	bed.link.Up()
	back := time.Now()
	// The server's own retry waits up to 2 min between tries.
	wait(b, 4*time.Minute, func() bool {
		if work == 0 && bed.siteWork(ctx, "edge-1", "app") == "r100" {
			work = time.Since(back)
		}
		if status == 0 && len(bed.hubStatus(b, "edge-1")) == 5 {
			status = time.Since(back)
		}
		return work > 0 && status > 0
	})
	return work, status
}

func wait(b *testing.B, limit time.Duration, ok func() bool) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			b.Fatalf("not converged within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
