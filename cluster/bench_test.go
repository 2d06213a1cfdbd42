package cluster

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ferryrelay/ferry/auth"
	"github.com/ferryrelay/ferry/internal/redistest"
	"github.com/ferryrelay/ferry/signaling"
)

// BenchmarkICEServersEndpoint measures GET /v1/ice-servers over loopback HTTP, side by side
// in one run: with the configured URLs only ("static"), and picking one of three registered
// relays from the registry ("registry", Redis on loopback). The registry is read in the
// background, so the difference is the pick itself: requests/s should be within noise.
func BenchmarkICEServersEndpoint(b *testing.B) {
	srv := redistest.Start(b)
	for i := range 3 {
		hb, err := NewHeartbeat(HeartbeatConfig{Client: newClient(b, srv), ID: fmt.Sprintf("r%d", i), Version: "bench",
			Relay: func() RelayState {
				return RelayState{URLs: []signaling.URL{{Scheme: "turn", Host: "127.0.0.1", Port: 3478 + i, Transport: "udp"}}}
			}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = hb.Close() })
	}
	reg, err := NewRegistry(RegistryConfig{Client: newClient(b, srv)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = reg.Close() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n, _ := reg.Relays(); len(n) == 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("relays not registered")
		}
	}
	a, err := auth.New(auth.Config{Secrets: []string{"bench-secret-0123456789abcdef"}, MaxTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	key, sum, err := signaling.NewAPIKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		relays signaling.RelayPicker
	}{{"static", nil}, {"registry", reg}} {
		b.Run(bc.name, func(b *testing.B) {
			h := signaling.NewHandler(signaling.Config{Auth: a, RatePerKey: -1,
				URLs:    signaling.BuildURLs("127.0.0.1", []int{3478}, nil, nil),
				APIKeys: []signaling.APIKey{{Name: "bench", SHA256: sum}}, Relays: bc.relays})
			ts := httptest.NewServer(h)
			defer ts.Close()
			defer h.Close()
			client := ts.Client()
			client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/ice-servers?ttl=600", nil)
					req.Header.Set("Authorization", "Bearer "+key)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// BenchmarkPickRelay is the registry's share of an answer: picking among 10 relays.
func BenchmarkPickRelay(b *testing.B) {
	v := &view{picks: map[string]int{}}
	for i := range 10 {
		v.nodes = append(v.nodes, &Node{ID: fmt.Sprintf("r%02d", i), Allocations: i % 3,
			URLs: []NodeURL{{Scheme: "turn", Host: "127.0.0.1", Port: 3478 + i, Transport: "udp"}}})
	}
	r := &Registry{}
	r.view.Store(v)
	b.Run("least-loaded", func(b *testing.B) {
		for b.Loop() {
			r.PickRelay("", "")
		}
	})
	b.Run("room", func(b *testing.B) {
		for b.Loop() {
			r.PickRelay("", "q3V0cW1nX2s3bHpwY2J4")
		}
	})
}
