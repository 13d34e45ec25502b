// Package jaeger owns Flotilla's Jaeger: the process `make up` and the
// tests run (Start, from the binary `make jaeger` builds) and a client of
// its HTTP query API (the JSON the Jaeger UI reads), which
// `kubectl flotilla trace` and the tests use to read releases' traces.
package jaeger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when Jaeger has no such trace.
var ErrNotFound = errors.New("trace not found")

// Client reads traces from Jaeger's query API.
type Client struct {
	// BaseURL is the query service's address, e.g. http://127.0.0.1:16686.
	BaseURL string
	HTTP    *http.Client
}

// New returns a client of the query API at baseURL.
func New(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// response is the envelope of every query API answer.
type response[T any] struct {
	Data   T               `json:"data"`
	Errors []responseError `json:"errors"`
}

type responseError struct {
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

// maxBody bounds what the client reads from Jaeger.
const maxBody = 256 << 20

// Trace returns the trace with that ID (32 hex digits). A trace Jaeger
// does not have is an error wrapping ErrNotFound.
func (c *Client) Trace(ctx context.Context, traceID string) (*Trace, error) {
	var traces []Trace
	status, err := get(ctx, c, "/api/traces/"+url.PathEscape(traceID), nil, &traces)
	if status == http.StatusNotFound || err == nil && len(traces) == 0 {
		return nil, fmt.Errorf("jaeger at %s: trace %s: %w", c.BaseURL, traceID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("jaeger at %s: trace %s: %w", c.BaseURL, traceID, err)
	}
	for i := range traces {
		if traces[i].TraceID == traceID {
			return &traces[i], nil
		}
	}
	return &traces[0], nil
}

// Find returns up to limit traces (0: Jaeger's default, 100) with a span
// of service that started within lookback of now. limit must stay below
// the store's max_traces.
func (c *Client) Find(ctx context.Context, service string, lookback time.Duration, limit int) ([]Trace, error) {
	q := url.Values{"service": {service}}
	if lookback > 0 {
		now := time.Now()
		q.Set("start", strconv.FormatInt(now.Add(-lookback).UnixMicro(), 10))
		q.Set("end", strconv.FormatInt(now.Add(time.Minute).UnixMicro(), 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var traces []Trace
	if _, err := get(ctx, c, "/api/traces", q, &traces); err != nil {
		return nil, fmt.Errorf("jaeger at %s: find traces of %s: %w", c.BaseURL, service, err)
	}
	return traces, nil
}

// Services lists the services that sent spans.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	var services []string
	if _, err := get(ctx, c, "/api/services", nil, &services); err != nil {
		return nil, fmt.Errorf("jaeger at %s: services: %w", c.BaseURL, err)
	}
	return services, nil
}

// get fetches path and decodes the envelope's data into out. It returns
// the HTTP status (0 when there was no answer).
func get[T any](ctx context.Context, c *Client, path string, q url.Values, out *T) (int, error) {
	u := c.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read answer: %w", err)
	}
	env, derr := decode[T](body)
	if derr == nil && len(env.Errors) > 0 {
		msgs := make([]string, 0, len(env.Errors))
		for _, e := range env.Errors {
			msgs = append(msgs, e.Msg)
		}
		return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.Join(msgs, "; "))
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(body))
	}
	if derr != nil {
		return resp.StatusCode, derr
	}
	*out = env.Data
	return resp.StatusCode, nil
}

// decode reads one query API answer.
func decode[T any](body []byte) (*response[T], error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var r response[T]
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode answer: %w (%s)", err, snippet(body))
	}
	return &r, nil
}

// DecodeTraces reads the answer of /api/traces or /api/traces/{id}.
func DecodeTraces(body []byte) ([]Trace, error) {
	r, err := decode[[]Trace](body)
	if err != nil {
		return nil, err
	}
	if len(r.Errors) > 0 {
		return nil, fmt.Errorf("jaeger: %s", r.Errors[0].Msg)
	}
	return r.Data, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strconv.Quote(s)
}
