package liveread

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"
)

// Options say where the live-read API listens.
type Options struct {
	// Listen is the address; empty: no live-read API.
	Listen string
	// TLSCert and TLSKey are what it serves with: a certificate for the
	// Service the hub's APIService names (<service>.<namespace>.svc).
	TLSCert, TLSKey string
}

// BindFlags binds --live-read-listen, --live-read-tls-cert, --live-read-tls-key.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Listen, "live-read-listen", "", "address of the live-read API the hub's API server forwards `kubectl flotilla get` to (deploy/liveread); empty: none")
	fs.StringVar(&o.TLSCert, "live-read-tls-cert", "", "PEM certificate the live-read API serves with, for the Service its APIService names")
	fs.StringVar(&o.TLSKey, "live-read-tls-key", "", "PEM key of --live-read-tls-cert")
}

// Validate says what is missing.
func (o Options) Validate() error {
	if o.Listen != "" && (o.TLSCert == "" || o.TLSKey == "") {
		return errors.New("--live-read-listen needs --live-read-tls-cert and --live-read-tls-key: the hub's API server speaks only TLS to aggregated APIs")
	}
	return nil
}

// Serve serves s on ln over TLS until ctx ends; it closes ln. Client
// certificates of the front proxy are verified here; which requests need
// one is the handler's business (health needs none).
func (s *Server) Serve(ctx context.Context, ln net.Listener, o Options) error {
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		ln.Close()
		return fmt.Errorf("live reads: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.proxy.CAs,
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	case err := <-errc:
		return fmt.Errorf("live reads: %w", err)
	}
}
