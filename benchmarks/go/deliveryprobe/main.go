// deliveryprobe: the append-to-delivery probe of benchmarks/bench_server.py, in Go so that the
// probe, like wrk beside it, costs the two cores it measures next to nothing (a Python client
// with three threads and a GIL adds its own waits to every figure).
//
//	deliveryprobe BASE_URL TOKEN FROM SECONDS RATE SUBSCRIBERS CONNECTIONS
//
// SUBSCRIBERS streams of GET /v1/subscribe?from=FROM&type=LeaseExpired, each on its own
// connection, are opened first (each waits for the stream's first line). Then, for SECONDS, one
// LeaseExpired event with a fresh subject is appended RATE times a second, in turn over
// CONNECTIONS keep-alive connections. One second after the last, it prints one JSON object,
// milliseconds per probe event: "sent" (send to delivery, per subscriber), "append" (send to
// 2xx), "after_ack" (2xx to delivery, 0 when the delivery came first), and "missed" (deliveries
// that never came). Only the standard library is used; any failure exits 1.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type delivery struct {
	subject string
	at      time.Time
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "deliveryprobe: "+format+"\n", args...)
	os.Exit(1)
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func main() {
	if len(os.Args) != 8 {
		fail("usage: deliveryprobe BASE_URL TOKEN FROM SECONDS RATE SUBSCRIBERS CONNECTIONS")
	}
	base, token, from := os.Args[1], os.Args[2], os.Args[3]
	seconds, err1 := strconv.ParseFloat(os.Args[4], 64)
	rate, err2 := strconv.ParseFloat(os.Args[5], 64)
	subscribers, err3 := strconv.Atoi(os.Args[6])
	connections, err4 := strconv.Atoi(os.Args[7])
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			fail("bad argument: %v", err)
		}
	}

	var mu sync.Mutex
	var received []delivery
	ready := make(chan struct{}, subscribers)
	for i := 0; i < subscribers; i++ {
		client := &http.Client{Transport: &http.Transport{}}
		req, err := http.NewRequest("GET", base+"/v1/subscribe?from="+from+"&type=LeaseExpired", nil)
		if err != nil {
			fail("%v", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			fail("subscribe: %v", err)
		}
		if resp.StatusCode != 200 {
			fail("subscribe: HTTP %d", resp.StatusCode)
		}
		go func(body io.ReadCloser) {
			reader := bufio.NewReader(body)
			first := true
			for {
				line, err := reader.ReadString('\n')
				if err != nil {
					return
				}
				if first {
					first = false
					ready <- struct{}{}
				}
				if !strings.HasPrefix(line, "data:") {
					continue
				}
				now := time.Now()
				var message struct {
					Event struct {
						Subject string `json:"subject"`
					} `json:"event"`
				}
				if json.Unmarshal([]byte(line[5:]), &message) != nil {
					continue
				}
				mu.Lock()
				received = append(received, delivery{message.Event.Subject, now})
				mu.Unlock()
			}
		}(resp.Body)
	}
	for i := 0; i < subscribers; i++ {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			fail("a subscription sent nothing within 30 s")
		}
	}

	clients := make([]*http.Client, connections)
	for i := range clients {
		clients[i] = &http.Client{
			Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1},
			Timeout:   30 * time.Second,
		}
	}
	sent := map[string]time.Time{}
	acked := map[string]time.Time{}
	var order []string
	until := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for turn := 0; time.Now().Before(until); turn++ {
		raw := make([]byte, 6)
		if _, err := rand.Read(raw); err != nil {
			fail("%v", err)
		}
		subject := "probe-" + hex.EncodeToString(raw)
		body := []byte(`{"type":"LeaseExpired","subject":"` + subject + `"}`)
		req, err := http.NewRequest("POST", base+"/v1/events", bytes.NewReader(body))
		if err != nil {
			fail("%v", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/jsonl")
		start := time.Now()
		resp, err := clients[turn%connections].Do(req)
		if err != nil {
			fail("append: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done := time.Now()
		if resp.StatusCode/100 != 2 {
			fail("append: HTTP %d", resp.StatusCode)
		}
		sent[subject], acked[subject] = start, done
		order = append(order, subject)
		time.Sleep(time.Duration(float64(time.Second) / rate))
	}
	time.Sleep(time.Second)

	mu.Lock()
	got := append([]delivery(nil), received...)
	mu.Unlock()
	figures := map[string][]float64{"sent": {}, "append": {}, "after_ack": {}}
	for _, subject := range order {
		figures["append"] = append(figures["append"], ms(acked[subject].Sub(sent[subject])))
	}
	count := 0
	for _, d := range got {
		start, ok := sent[d.subject]
		if !ok {
			continue
		}
		count++
		figures["sent"] = append(figures["sent"], ms(d.at.Sub(start)))
		after := d.at.Sub(acked[d.subject])
		if after < 0 {
			after = 0
		}
		figures["after_ack"] = append(figures["after_ack"], ms(after))
	}
	figures["missed"] = []float64{float64(len(sent)*subscribers - count)}
	if err := json.NewEncoder(os.Stdout).Encode(figures); err != nil {
		fail("%v", err)
	}
}
