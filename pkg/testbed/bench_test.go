package testbed

import (
	"context"
	"testing"
	"time"
)

// BenchmarkStartHubAndTwoClusters measures how long a test, the demo or a
// benchmark waits for hub + 2 managed clusters to be usable (API servers
// ready, nodes Ready, controller managers running), and how long Stop takes.
func BenchmarkStartHubAndTwoClusters(b *testing.B) {
	var start, stop time.Duration
	for b.Loop() {
		t0 := time.Now()
		env, err := Start(context.Background(), Options{Clusters: []string{"test", "prod"}})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := env.Stop(); err != nil {
			b.Fatal(err)
		}
		start += t1.Sub(t0)
		stop += time.Since(t1)
	}
	b.ReportMetric(start.Seconds()/float64(b.N), "start-s/op")
	b.ReportMetric(stop.Seconds()/float64(b.N), "stop-s/op")
}
