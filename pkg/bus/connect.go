package bus

import (
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
)

// ConnectOptions say how a service reaches NATS. Every service binds them.
type ConnectOptions struct {
	// URL of the NATS server or cluster (comma-separated).
	URL string
	// Creds is a NATS credentials file (JWT + NKey seed); empty for none.
	Creds string
	// NKey is a file holding the user's NKey seed (SU...), to authenticate with.
	NKey string
	// TLSCA is a PEM file of the CA that signed the server's certificate;
	// TLSCert and TLSKey a client certificate, when the server asks for one.
	TLSCA, TLSCert, TLSKey string
	// InboxPrefix, when set, is the prefix of reply subjects (an agent may
	// subscribe to its own inboxes only).
	InboxPrefix string
	// Name identifies the connection in the server's monitoring.
	Name string
	// API is the JetStream API prefix ("": ServiceAPI; an agent's is
	// ClusterAPI).
	API string
}

// BindFlags binds the --nats-* flags, defaulting to $NATS_URL, $NATS_CREDS,
// $NATS_NKEY and $NATS_CA.
func (o *ConnectOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.URL, "nats-url", envOr("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma-separated ($NATS_URL)")
	fs.StringVar(&o.Creds, "nats-creds", os.Getenv("NATS_CREDS"), "NATS credentials file (JWT + seed) ($NATS_CREDS)")
	fs.StringVar(&o.NKey, "nats-nkey", os.Getenv("NATS_NKEY"), "file with the NATS user's NKey seed ($NATS_NKEY)")
	fs.StringVar(&o.TLSCA, "nats-ca", os.Getenv("NATS_CA"), "PEM file of the CA that signed the NATS server's certificate ($NATS_CA)")
	fs.StringVar(&o.TLSCert, "nats-tls-cert", "", "client certificate (PEM) for a NATS server that asks for one")
	fs.StringVar(&o.TLSKey, "nats-tls-key", "", "key (PEM) of --nats-tls-cert")
}

// Key is the key pair the options log in with (nil: none).
func (o *ConnectOptions) Key() (nkeys.KeyPair, error) {
	path := o.NKey
	if path == "" {
		path = o.Creds
	}
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("NATS key %s: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("NATS key %s: %w", path, err)
	}
	return kp, nil
}

// Connect connects and returns the connection and its JetStream context. The
// connection reconnects forever: a service outlives NATS restarts.
func (o *ConnectOptions) Connect() (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, nil, fmt.Errorf("NATS nkey %s: %w", o.NKey, err)
		}
		opts = append(opts, opt)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", o.URL, err)
	}
	api := o.API
	if api == "" {
		api = ServiceAPI
	}
	js, err := jetstream.NewWithAPIPrefix(nc, api)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream at %s: %w", o.URL, err)
	}
	return nc, js, nil
}
