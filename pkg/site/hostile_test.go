package site_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// rawLeaf is a site that lies below the level of any NATS server: it
// speaks the leaf node protocol itself, so it sends whatever it likes,
// whether or not the hub ever showed interest in it. Only the hub's own
// checks stand in its way.
type rawLeaf struct {
	conn net.Conn
	mu   sync.Mutex
	msgs map[string][]string // subject → payloads received
}

// dialRawLeaf logs in to a hub's leaf port with a leaf link's credentials
// file (user JWT and seed).
func dialRawLeaf(t testing.TB, addr string, creds []byte) *rawLeaf {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.ParseDecoratedNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("the hub's leaf port: %q, %v", line, err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info); err != nil {
		t.Fatal(err)
	}
	sig, err := kp.Sign([]byte(info.Nonce))
	if err != nil {
		t.Fatal(err)
	}
	connect, _ := json.Marshal(map[string]any{"jwt": token, "sig": base64.RawURLEncoding.EncodeToString(sig),
		"name": "liar", "server_id": "liar", "headers": true, "protocol": 1})
	l := &rawLeaf{conn: c, msgs: map[string][]string{}}
	l.send(t, "CONNECT "+string(connect)+"\r\nPING\r\n")
	pong := make(chan struct{})
	go l.read(r, pong)
	select {
	case <-pong:
	case <-time.After(5 * time.Second):
		t.Fatal("the hub never took the hostile leaf's login")
	}
	return l
}

func (l *rawLeaf) send(t testing.TB, s string) {
	t.Helper()
	if _, err := l.conn.Write([]byte(s)); err != nil {
		t.Fatalf("%v (the hub said %q)", err, l.received("-ERR"))
	}
}

// read takes in what the hub sends, answering its pings.
func (l *rawLeaf) read(r *bufio.Reader, pong chan struct{}) {
	var once sync.Once
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "PING":
			_, _ = l.conn.Write([]byte("PONG\r\n"))
		case line == "PONG":
			once.Do(func() { close(pong) })
		case strings.HasPrefix(line, "-ERR"):
			l.mu.Lock()
			l.msgs["-ERR"] = append(l.msgs["-ERR"], line)
			l.mu.Unlock()
		case strings.HasPrefix(line, "LMSG "), strings.HasPrefix(line, "HMSG "):
			f := strings.Fields(line)
			size, _ := strconv.Atoi(f[len(f)-1])
			body := make([]byte, size+2)
			if _, err := readFull(r, body); err != nil {
				return
			}
			l.mu.Lock()
			l.msgs[f[1]] = append(l.msgs[f[1]], string(body[:size]))
			l.mu.Unlock()
		}
	}
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// sub shows the hub interest in subject (as a leaf node would for its
// subscribers).
func (l *rawLeaf) sub(t testing.TB, subject string) { l.send(t, "LS+ "+subject+"\r\n") }

// pub sends a message on subject, with reply ("" none).
func (l *rawLeaf) pub(t testing.TB, subject, reply, data string) {
	t.Helper()
	if reply == "" {
		l.send(t, fmt.Sprintf("LMSG %s %d\r\n%s\r\n", subject, len(data), data))
		return
	}
	l.send(t, fmt.Sprintf("LMSG %s %s %d\r\n%s\r\n", subject, reply, len(data), data))
}

// received is what the hub sent on subject.
func (l *rawLeaf) received(subject string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs[subject]...)
}
