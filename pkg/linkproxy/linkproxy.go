// Package linkproxy owns the cuttable link of the test bed's air-gapped
// site: a TCP proxy between a site's NATS leaf node and the hub that can be
// cut (every open connection reset, new ones refused or left hanging) and
// restored, as a WAN link or a firewall would. `make link-down` and the
// air-gap tests cut it; nothing in production runs it.
package linkproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Mode is how a cut link fails.
type Mode int

const (
	// Reset closes every connection and refuses new ones: a peer that is
	// gone, seen at once.
	Reset Mode = iota
	// Blackhole keeps connections open and drops everything: a cable
	// pulled, seen only by timeouts.
	Blackhole
)

// Proxy forwards TCP connections from its listener to Target while up.
type Proxy struct {
	Target string

	ln     net.Listener
	mu     sync.Mutex
	down   bool
	mode   Mode
	since  time.Time
	conns  map[*pair]struct{}
	wg     sync.WaitGroup
	closed bool
}

type pair struct{ a, b net.Conn }

func (p *pair) close() { _ = p.a.Close(); _ = p.b.Close() }

// Listen starts a proxy on addr ("127.0.0.1:0" for any port) to target.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link proxy: listen on %s: %w", addr, err)
	}
	p := &Proxy{Target: target, ln: ln, conns: map[*pair]struct{}{}, since: time.Now()}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Down cuts the link: open connections are reset (Reset) or silently
// starved (Blackhole); new ones fail alike until Up.
func (p *Proxy) Down(mode Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.down {
		p.since = time.Now()
	}
	p.down, p.mode = true, mode
	if mode == Reset {
		for c := range p.conns {
			c.close()
			delete(p.conns, c)
		}
	}
}

// Up restores the link: connections starved by a blackhole are closed (the
// peers reconnect at once, as after a real outage their TCP would time
// out) and new ones are forwarded.
func (p *Proxy) Up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		p.since = time.Now()
	}
	p.down = false
	for c := range p.conns {
		if p.mode == Blackhole {
			c.close()
			delete(p.conns, c)
		}
	}
}

// State says whether the link is up and since when.
func (p *Proxy) State() (up bool, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.down, p.since
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *Proxy) serve(c net.Conn) {
	p.mu.Lock()
	down, mode := p.down, p.mode
	p.mu.Unlock()
	if down {
		if mode == Blackhole {
			// Held open, never answered, until the link returns.
			p.hold(c)
			return
		}
		_ = c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	t, err := d.DialContext(ctx, "tcp", p.Target)
	if err != nil {
		_ = c.Close()
		return
	}
	pr := &pair{a: c, b: t}
	p.mu.Lock()
	if p.closed || p.down {
		p.mu.Unlock()
		pr.close()
		return
	}
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go p.pump(pr, t, c, done)
	go p.pump(pr, c, t, done)
	<-done
	pr.close()
	<-done
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

// pump copies src to dst while the link is up; while it is blackholed
// what arrives is dropped.
func (p *Proxy) pump(pr *pair, dst, src net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := p.down && p.mode == Blackhole
			p.mu.Unlock()
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF, reset, or closed by Down
		}
	}
}

// hold keeps a connection made while blackholed open until the link returns
// or the proxy closes, reading and dropping what it sends.
func (p *Proxy) hold(c net.Conn) {
	pr := &pair{a: c, b: c}
	p.mu.Lock()
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	_, _ = io.Copy(io.Discard, c)
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}
