package linkproxy_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
)

// echo is a TCP server that answers each line with itself.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

func TestLinkCutAndRestored(t *testing.T) {
	for _, mode := range []linkproxy.Mode{linkproxy.Reset, linkproxy.Blackhole} {
		p, err := linkproxy.Listen("127.0.0.1:0", echo(t))
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c); err != nil {
			t.Fatalf("mode %d: while up: %v", mode, err)
		}
		p.Down(mode)
		if up, _ := p.State(); up {
			t.Fatal("State says up after Down")
		}
		if err := roundTrip(c); err == nil {
			t.Fatalf("mode %d: an open connection still carries data while the link is down", mode)
		}
		if c2, err := net.Dial("tcp", p.Addr()); err == nil {
			if err := roundTrip(c2); err == nil {
				t.Fatalf("mode %d: a new connection carries data while the link is down", mode)
			}
			_ = c2.Close()
		}
		p.Up()
		c3, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c3); err != nil {
			t.Fatalf("mode %d: after Up: %v", mode, err)
		}
		_ = c.Close()
		_ = c3.Close()
		_ = p.Close()
	}
}
